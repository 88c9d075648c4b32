-- The binlog engine's sink side: changes applied inside the open sink
-- transaction (merged across source transactions, transformed), the commit
-- with the watermark, idle watermark advances and per-table failures. The
-- Runner methods are installed by engine/binlog.lua.
local batchlib = require("mocdc.batch")
local copy = require("mocdc.engine.copy")
local errors = require("mocdc.errors")
local log = require("mocdc.log")
local position = require("mocdc.position")
local stream = require("mocdc.pipeline.stream")
local util = require("mocdc.util.lib")
local cjson = require("cjson")

local M = {}
local Runner = {}
M.methods = Runner

-- Errors are per table: a table whose changes cannot be applied (and not a
-- transient error) is stopped with its watermark frozen; the open sink
-- transaction is rolled back and the stream restarts from the last committed
-- position for the other tables, so none of their changes is lost.
function Runner:table_failed(t, e) return self:tables_failed({ t }, e) end

function Runner:tables_failed(list, e)
  if errors.retryable(e) then error(e, 0) end
  local active = 0
  for _, x in ipairs(self.tables) do if not x.failed then active = active + 1 end end
  if active <= #list then error(e, 0) end
  self.sink:rollback()
  self.in_txn, self.mid_txn = false, false
  for _, t in ipairs(list) do
    t.failed = errors.message(e)
    log.error("table %s stopped (the other tables go on): %s", t.src_label, t.failed)
    if self.ctx.on_table_error then self.ctx.on_table_error(t, t.failed) end
  end
  error({ restart_stream = true }, 0)
end

-- Apply one batch of changes of table t inside the open sink transaction.
function Runner:apply(t, b)
  local sink = self.sink
  if not self.in_txn then
    sink:begin()
    self.in_txn, self.txn_started, self.txn_rows = true, util.mono(), 0
  end
  if self.transform then
    b = self:transform_batch(t, b)
    if b:count() == 0 then b:free() return end
  end
  self.mid_txn = true
  local n = b:count()
  if not (self.merge_rows and self:merge(t, b, n)) then
    self:reap_sink()
    local ok, e = pcall(sink.apply_changes, sink, t, b, self.cur_ev)
    if not ok then
      if self.transform then b:free() end
      self:table_failed(t, e)
    end
  end
  if self.transform then b:free() end
  self.txn_rows = self.txn_rows + n
  self.applied = (self.applied or 0) + n
  t.applied = (t.applied or 0) + n
end

-- Batch merging (sinks with merges_batches, i.e. SQL sinks): the small
-- batches of consecutive source transactions on one table are copied into one
-- pending batch of up to batchSize rows (default 5000), applied as one
-- DELETE + one REPLACE instead of two statements per source transaction
-- (bench/binlog_apply.sh: ~15% less sink CPU, 100x fewer round trips). The
-- builder collapses the merged rows per key as it does within any batch. The
-- pending batch is applied before the watermark in flush() (so a sink
-- transaction still ends on a source commit boundary), and before a batch of
-- another table (order across tables is kept). A batch of batchSize rows or
-- more is applied as it comes.
local MERGE_MAX_BYTES = 16 * 1024 * 1024

local function col_sig(cols)
  local parts = {}
  for i, c in ipairs(cols) do parts[i] = c.name .. "\0" .. c.class end
  return table.concat(parts, "\1")
end

-- Takes b's rows into the pending batch (true), or returns false: apply b now.
function Runner:merge(t, b, n)
  local p = self.pending
  if p and (n >= self.merge_rows or self.pending_t ~= t or self.pending_sig ~= col_sig(b:columns())) then
    self:apply_pending()
    p = nil
  end
  if n >= self.merge_rows then return false end
  if not p then
    local cols = b:columns()
    p = batchlib.new(cols)
    self.pending, self.pending_t, self.pending_sig = p, t, col_sig(cols)
  end
  if p.append then p:append(b) -- native copy, when the batch module has one
  else for i = 1, n do p:add(b:get(i)) end end
  if p:count() >= self.merge_rows or p:bytes() >= MERGE_MAX_BYTES then self:apply_pending() end
  return true
end

-- The result of the sink's pipelined statement (sink.inflight_t, see
-- sink/mysql.lua), charged to its own table.
function Runner:reap_sink()
  local t = self.sink.inflight_t
  if not t then return end
  local ok, e = pcall(self.sink.reap, self.sink)
  if not ok then self:table_failed(t, e) end
end

function Runner:apply_pending()
  local p, t = self.pending, self.pending_t
  if not p then return end
  self.pending, self.pending_t, self.pending_sig = nil, nil, nil
  self:reap_sink()
  local ok, e = pcall(self.sink.apply_changes, self.sink, t, p)
  p:free()
  if not ok then self:table_failed(t, e) end
end

function Runner:transform_batch(t, b)
  -- the output has the columns the transforms leave (drop / rename), as the sink table
  local out = batchlib.new(stream.output_columns(self.job.stream.transforms, b:columns()))
  local fn = self.transform
  for i = 1, b:count() do
    local op, before, after = b:get_named(i)
    local ok, nb, na = true, before, after
    local okf, res = pcall(function()
      if before then nb = fn(before) end
      if after then na = fn(after) end
    end)
    if not okf then
      local e = type(res) == "table" and res or { msg = tostring(res) }
      errors.raise(string.format("transform %s at %s failed on %s %s: %s", e.transform or "?", e.where or "?",
        t.src_label, op, e.msg))
    end
    -- a row the transforms drop (nil) is not in the sink: an update moving a
    -- row out of what they keep deletes it there, one moving it in inserts it
    local keep_b, keep_a = before == nil or nb ~= nil, after == nil or na ~= nil
    local out_op = op
    if op == "update" and keep_b ~= keep_a then
      if keep_b then out_op, na = "delete", nil else out_op, nb = "insert", nil end
    elseif not (keep_b and keep_a) then
      ok = false
    end
    if ok then
      local _, ob, oa = b:get_named(i) -- the transform may have changed before/after in place
      copy.add_transformed(out, out_op, nb, na, t, op, oa or ob)
    end
  end
  return out
end

-- Commit the open sink transaction together with the watermark at `pos`.
function Runner:flush(pos)
  if not self.in_txn then return end
  assert(not self.mid_txn, "internal: flush inside a source transaction")
  self:apply_pending()
  self:reap_sink()
  local sink = self.sink
  for _, t in ipairs(self.tables) do
    if not t.failed then
      t.pos = position.max(t.pos, pos)
      sink:set_watermark(t.src_label, t.dst_db .. "." .. t.dst_table, "cdc", nil, t.pos)
    end
  end
  sink:commit()
  self.in_txn = false
  self.last_wm_time = util.mono()
  self.store:set("position", cjson.encode(pos))
  if self.ctx.on_checkpoint then self.ctx.on_checkpoint(self.tables, pos) end
end

-- Advance the watermark without data (idle source / unrelated traffic).
function Runner:advance_idle(pos, force)
  if self.in_txn or not pos then return end
  local now = util.mono()
  if not force and self.last_wm_time and now - self.last_wm_time < self.idle_interval then return end
  local moved = false
  for _, t in ipairs(self.tables) do
    if position.compare(pos, t.pos) > 0 then moved = true end
  end
  if not moved and not force then self.last_wm_time = now return end
  self.sink:begin()
  self.in_txn = true
  self:flush(pos)
end

return M
