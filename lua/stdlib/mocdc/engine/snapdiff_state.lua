-- The snapshot-diff engine's stored state: per (pipeline, source table, sink
-- table) the object list (chunk boundaries, row counts and sums), the gate
-- value and the change-scan bound of the last iteration, in the sink's
-- diff_state table beside the watermark, both written in the sink transaction
-- that applies the iteration's rows. The Engine methods are installed by
-- engine/snapdiff.lua.
local diff = require("mocdc.engine.snapdiff_sql")
local q = require("mocdc.engine.snapdiff_ranges").q
local schema = require("mocdc.schema")

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

return M
