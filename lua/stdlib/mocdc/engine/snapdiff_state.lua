-- The snapshot-diff engine's stored state: per (pipeline, source table, sink
-- table) the object list (chunk boundaries, row counts and sums), the gate
-- value and the change-scan bound of the last iteration, in the sink's
-- diff_state table beside the watermark, both written in the sink transaction
-- that applies the iteration's rows. The Engine methods are installed by
-- engine/snapdiff.lua.
local batchlib = require("mocdc.batch")
local diff = require("mocdc.engine.snapdiff_sql")
local errors = require("mocdc.errors")
local q = require("mocdc.engine.snapdiff_ranges").q
local schema = require("mocdc.schema")
local util = require("mocdc.util.lib")

local M = {}
local Engine = {}
M.methods = Engine

function Engine:state_table()
  return schema.qname(self.sink.wm_db, "diff_state")
end

function Engine:ensure_state_table()
  if self.state_ready then return end
  self.sink:ensure_watermark()
  self.sink:exec("CREATE TABLE IF NOT EXISTS " .. self:state_table() .. [[ (
  pipeline VARCHAR(128) NOT NULL,
  source_table VARCHAR(400) NOT NULL,
  state LONGTEXT NOT NULL,
  updated_at DATETIME(6) NOT NULL,
  PRIMARY KEY (pipeline, source_table))]], "creating the diff state table")
  self.state_ready = true
end

-- A stored state belongs to (pipeline, source table, sink table), like the
-- watermark: a stream retargeted and back again must never diff one sink table
-- against the object list of another (the rows changed meanwhile were lost).
-- States stored before this by source table alone are not read: a table
-- without a state is compared with the sink itself.
function Engine:state_id(t)
  return (self.hooks.state_id and self.hooks.state_id(t)) or (t.src_label .. " -> " .. t.dst_label)
end

function Engine:read_state(t)
  self:ensure_state_table()
  local c = self.sink.c
  local rows = q(c, "SELECT state FROM " .. self:state_table() .. " WHERE pipeline = '" .. c:escape(self.sink.pipeline) ..
    "' AND source_table = '" .. c:escape(self:state_id(t)) .. "'", "reading the diff state")
  if not rows[1] then return nil end
  local s = diff.decode_state(rows[1][1], t.keycols)
  if s and s.sig ~= t.diff_sig then return nil end
  return s
end

-- Write the state, the watermark and the hook's rows in the open transaction.
function Engine:write_state(t, state, info)
  local c = self.sink.c
  self.sink:exec("REPLACE INTO " .. self:state_table() .. " (pipeline, source_table, state, updated_at) VALUES ('" ..
    c:escape(self.sink.pipeline) .. "', '" .. c:escape(self:state_id(t)) .. "', '" ..
    c:escape(diff.encode_state(state, t.keycols)) .. "', UTC_TIMESTAMP(6))", "writing the diff state")
  if not self.hooks.no_watermark then
    self.sink:set_watermark(t.src_label, t.dst_label, "diff", nil, info)
  end
end

function Engine:delete_state(t)
  self:ensure_state_table()
  local c = self.sink.c
  self.sink:exec("DELETE FROM " .. self:state_table() .. " WHERE pipeline = '" .. c:escape(self.sink.pipeline) ..
    "' AND source_table = '" .. c:escape(self:state_id(t)) .. "'", "deleting the diff state")
end

-- Commit the sink transaction of an iteration (or of a piece of it).
function Engine:commit(t, st, final)
  if self.hooks.before_commit then self.hooks.before_commit(t, st, final) end
  self.sink:commit()
  st.commits = st.commits + 1
end

-- The sink side of one iteration of a table (chunk sums or key-driven): the
-- changed rows gathered in `out`, applied in a sink transaction begun on the
-- first write and committed with the state every batchSize rows and at the end.
local Txn = {}
Txn.__index = Txn

function M.txn(eng, t, st, info)
  return setmetatable({ eng = eng, sink = eng.sink, t = t, st = st, info = info,
    out = batchlib.new(t.out_columns), in_txn = false }, Txn)
end

function Txn:begin()
  if not self.in_txn then self.sink:begin() self.in_txn = true end
end

local function apply_out(self)
  if self.out:count() > 0 then
    self:begin()
    self.sink:apply_batch(self.out, self.t, "replace")
    self.out:clear()
  end
end

-- Apply the gathered rows inside the transaction, without committing.
function Txn:apply()
  local ta = util.mono()
  apply_out(self)
  self.st.t_apply = self.st.t_apply + (util.mono() - ta)
end

-- Apply the gathered rows, write state_of(final, in_txn) (the state to store,
-- or nil) and commit. final: the iteration's last commit.
function Txn:flush(final, state_of)
  local ta = util.mono()
  apply_out(self)
  local state = state_of(final, self.in_txn)
  if state then
    self:begin()
    self.eng:write_state(self.t, state, self.info)
  end
  if self.in_txn then
    self.eng:commit(self.t, self.st, final)
    self.in_txn = false
  end
  self.st.t_apply = self.st.t_apply + (util.mono() - ta)
end

-- A stop asked for (a signal, the job's should_stop): raise between pieces.
function Txn:check_stop()
  local hooks = self.eng.hooks
  if util.stop_requested() or (hooks.should_stop and hooks.should_stop()) then
    errors.raise("interrupted; the next iteration continues from the last commit", 130)
  end
end

-- Run body(); whatever happens `out` (and `also`, a batch, when given) is
-- freed, and on an error the open transaction is rolled back.
function Txn:run(body, also)
  local ok, err = pcall(body)
  if also then also:free() end
  self.out:free()
  if not ok then
    if self.in_txn then self.sink:rollback() end
    error(err, 0)
  end
end

return M
