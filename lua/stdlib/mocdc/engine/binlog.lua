-- The binlog pipeline: a consistent full copy taken at a binlog position,
-- then every row change from the binlog, applied in source commit order.
--
-- Exactly-once: each sink transaction ends on a source commit boundary and
-- carries the watermark rows (one per table: the binlog position after the
-- last applied source transaction); the local checkpoint store mirrors them.
-- On restart the sink's watermark wins, and transactions that started before
-- a table's watermark are skipped for that table, so nothing is applied twice.
-- Several source transactions may share one sink transaction (fewer commits),
-- and a sink transaction is committed as soon as the stream goes idle.
--
-- This file is the run and the event loop; engine/binlog_source.lua the
-- source's settings and positions, engine/binlog_apply.lua the sink side
-- (apply, merge, flush), engine/binlog_ddl.lua DDL and STATEMENT-format DML.
local binlog = require("mocdc.binlog")
local bsource = require("mocdc.engine.binlog_source")
local bapply = require("mocdc.engine.binlog_apply")
local bddl = require("mocdc.engine.binlog_ddl")
local copy = require("mocdc.engine.copy")
local errors = require("mocdc.errors")
local job_mod = require("mocdc.pipeline.job")
local log = require("mocdc.log")
local position = require("mocdc.position")
local snapshot = require("mocdc.source.mysql")
local stream = require("mocdc.pipeline.stream")
local util = require("mocdc.util.lib")

local truthy = require("mocdc.pipeline.options").truthy

local M = {}
-- the engine's public helpers (the task CLI and worker use them)
for _, k in ipairs({ "check_binlog_settings", "master_status", "first_binlog", "explicit_start", "parse_ts",
  "FULL_COPY_HINT", "check_history" }) do M[k] = bsource[k] end
M.ddl_targets, M.dml_targets = bddl.ddl_targets, bddl.dml_targets

local Runner = {}
Runner.__index = Runner
for _, part in ipairs({ bapply, bddl }) do
  for k, f in pairs(part.methods) do Runner[k] = f end
end

function M.run(job, ctx, run_opts)
  local o = job.stream.source.opts
  local r = setmetatable({ job = job, o = o, ctx = ctx, run_opts = run_opts or {} }, Runner)
  return r:main()
end

function Runner:open_sink()
  return job_mod.open_sink(self.job, self.ctx.name)
end

function Runner:main()
  local o, job = self.o, self.job
  local src = snapshot.open(o)
  self.src = src
  local ok, res = pcall(function()
    bsource.check_binlog_settings(src.c)
    local sink = self:open_sink()
    self.sink = sink
    local store, dir = job_mod.open_store(job, self.ctx.name)
    self.store = store
    self.merge_schema = truthy(job.opts.mergeSchema)
    self.transform = stream.compile(job.stream.transforms)
    self.start_ts = bsource.parse_ts("startTs", o.startTs)
    self.end_ts = bsource.parse_ts("endTs", o.endTs)
    if self.start_ts and self.end_ts and self.end_ts <= self.start_ts then
      errors.raise(string.format("endTs %s must be later than startTs %s", o.endTs, o.startTs), 2)
    end
    local list = src:tables()
    job_mod.claim(sink, dir, self.ctx)
    for _, t in ipairs(list) do
      t.wm = sink:read_watermark(t.src_label, t.dst_db .. "." .. t.dst_table)
      copy.prepare(t, sink, job.stream.transforms, t.wm ~= nil and t.wm.phase == "cdc")
    end
    self.tables, self.by_name = list, {}
    for _, t in ipairs(list) do self.by_name[t.src_db .. "\0" .. t.src_table] = t end
    self:initial_positions()
    if self.ctx.on_checkpoint then self.ctx.on_checkpoint(self.tables) end -- copied / positioned: in sync
    while true do
      local ok2, r = pcall(self.stream_loop, self)
      if ok2 then
        local failed = {}
        for _, t in ipairs(self.tables) do
          if t.failed then failed[#failed + 1] = t.src_label .. ": " .. t.failed end
        end
        if #failed > 0 then
          errors.raise(string.format("%d table(s) stopped, the others are in sync: %s", #failed, table.concat(failed, "; ")))
        end
        return r
      end
      if not (type(r) == "table" and r.restart_stream) then error(r, 0) end
      if self.stream_h then self.stream_h:close() self.stream_h = nil end
      self.last_commit = nil
    end
  end)
  if self.stream_h then self.stream_h:close() end
  if self.sink then pcall(self.sink.rollback, self.sink) self.sink:close() end
  if self.store then self.store:close() end
  src:close()
  if not ok then error(res, 0) end
  return res
end

-- Decide, per table, where the binlog stream starts for it; full-copy the
-- tables that have not been copied yet (unless noFull / an explicit start).
function Runner:initial_positions()
  local o, src, sink = self.o, self.src, self.sink
  local explicit = bsource.explicit_start(o)
  local no_full = truthy(o.noFull) or explicit ~= nil or self.start_ts ~= nil
  local need_full, fresh, checked = {}, {}, {}
  for _, t in ipairs(self.tables) do
    local saved = t.wm and t.wm.position
    if saved and not checked[position.format(saved)] then
      bsource.check_history(src.c, saved)
      checked[position.format(saved)] = true
    end
  end
  for _, t in ipairs(self.tables) do
    if t.wm and t.wm.phase ~= "full" and t.wm.position then
      t.pos = t.wm.position
    elseif no_full then
      fresh[#fresh + 1] = t
    else
      need_full[#need_full + 1] = t
    end
  end
  if #fresh > 0 then
    local p = explicit or (self.start_ts and bsource.first_binlog(src.c)) or bsource.master_status(src.c)
    for _, t in ipairs(fresh) do
      t.pos = position.copy(p)
      sink:begin()
      sink:set_watermark(t.src_label, t.dst_db .. "." .. t.dst_table, "cdc", nil, t.pos)
      sink:commit()
    end
    log.info("no full copy: streaming %d table(s) from %s", #fresh, position.format(p))
  end
  if #need_full > 0 then
    src.o.needPosition = true
    local p = src:begin_snapshot()
    if not p then
      errors.raise(string.format("source %s (%s) cannot report the binlog position of a consistent snapshot; " ..
        "use noFull = true with binlogIndex/binlogFileOffset after loading the tables yourself", src.c.label, src.c.flavour))
    end
    local cctx = copy.context(src, sink, self.store, self.job.stream.transforms, o, { final_phase = "cdc" })
    for _, t in ipairs(need_full) do
      -- this snapshot's position, unless copy_table resumes by key (then the earlier snapshot's)
      cctx.position, cctx.resume_position = p, t.wm and t.wm.position
      local n, el = copy.copy_table(cctx, t)
      log.info("full copy %s -> %s.%s: %d rows in %.2f s (binlog from %s)", t.src_label, t.dst_db, t.dst_table,
        n, el, position.format(cctx.position))
      t.pos = position.copy(cctx.position)
    end
    src:end_snapshot()
  end
end

function Runner:selected(db, tbl)
  local t = self.by_name[db .. "\0" .. tbl]
  return t ~= nil and not t.failed
end


-- The stream's start (the lowest position of the tables still going) and,
-- for a --once run, the source position to stop at.
function Runner:stream_start()
  local start
  for _, t in ipairs(self.tables) do
    if not t.failed then start = start and position.min(start, t.pos) or t.pos end
  end
  self.target = self.run_opts.once and bsource.master_status(self.src.c) or nil
  return start
end

function Runner:caught_up(pos)
  return self.target ~= nil and position.compare(pos, self.target) >= 0
end

-- Open the binlog stream at `start` with the source's own connection settings
-- (TLS, socket, timeouts, charset: the one C opener).
function Runner:open_stream(start)
  local o, src = self.o, self.src
  local server_id = tonumber(o.serverId) or (1000000 + (util.getpid() % 1000000))
  local p = assert(require("mocdc.conn").settings(src.uri, { password = o.password,
    read_timeout = o.readTimeout, connect_timeout = o.connectTimeout }))
  p.server_id, p.file, p.heartbeat = server_id, start.file, tonumber(o.heartbeat) or 1
  p.pos = start.file and start.pos or nil
  p.gtid = (not start.file) and start.gtid or nil
  local h, err, code = binlog.open(p)
  if not h then
    if code == 1236 then
      errors.raise(string.format("binlog %s needed to resume is no longer on source %s (purged): %s; %s",
        position.format(start), src.c.label, err, bsource.FULL_COPY_HINT))
    end
    errors.open_failed(string.format("cannot read the binlog of source %s: %s", src.c.label, err), code)
  end
  self.stream_h = h
  log.info("streaming binlog from %s (server_id %d)", position.format(start), server_id)
  return h
end

-- The loop's settings, read once per stream (the options may differ per run).
function Runner:stream_settings()
  local o = self.o
  self.idle_interval = tonumber(o.heartbeatInterval) or 1
  self.in_src_txn = false -- between a transaction's GTID/BEGIN and its end (any table)
  if self.pending then self.pending:free() self.pending = nil end -- rolled back with the sink transaction
  self.merge_rows = self.sink.merges_batches and (tonumber(o.batchSize) or 5000) or nil
  self.sink.pipelined = self.sink.can_pipeline ~= nil and self.sink:can_pipeline()
  self.max_txn_rows = tonumber(o.maxTxnRows) or 50000
  -- duration (MLSQL) / flushInterval: longest time a sink transaction stays open while busy
  self.flush_interval = tonumber(self.job.opts.flushInterval or self.job.opts.duration) or 0.2
end

-- Commit what is whole (only whole source transactions are ever committed).
function Runner:flush_whole()
  if self.in_txn and self.last_commit and not self.mid_txn then self:flush(self.last_commit) end
end

-- The event handlers: each takes the event and returns true to end the loop.
-- State between events: self.cur (the stream's position), self.txn_start
-- (where the current source transaction began), self.gtid (its GTID).
local ON = {}

function ON.table(self, ev)
  self.stream_h:want(ev.db, ev.table, self:selected(ev.db, ev.table))
end

function ON.need_schema(self, ev)
  -- the source does not log column names (binlog_row_metadata is not FULL):
  -- use the table's current definition (exact unless its DDL changed since)
  local src = self.src
  local cols, serr, serrno = binlog.schema_columns(src.c, ev.db, ev.table)
  if not cols then
    errors.raise_sql(string.format("cannot read the columns of %s.%s on source %s: %s (set binlog_row_metadata=FULL " ..
      "on the source to make the binlog self-describing)", ev.db, ev.table, src.c.label, tostring(serr)), serrno)
  end
  self.stream_h:set_schema(ev.db, ev.table, cols)
end

function ON.statement(self, ev)
  if not (self.start_ts and ev.ts and ev.ts < self.start_ts) then self:statement(ev, self.cur, self.txn_start) end
  if ev.pos then self.cur.pos = ev.pos end
end

function ON.rollback(self, ev)
  self.in_src_txn = false
  if self.mid_txn then
    errors.raise(string.format("source %s logged a ROLLBACK after row changes at %s:%s (non-transactional tables?); " ..
      "restart the pipeline to replay from the last checkpoint", self.src.c.label, self.cur.file, tostring(ev.pos)))
  end
  if ev.pos then self.cur.pos = ev.pos end
end

function ON.gtid(self, ev)
  self.txn_start = position.copy(self.cur)
  self.in_src_txn = true
  if ev.type == "gtid" then self.gtid = ev.gtid end
  if ev.pos then self.cur.pos = ev.pos end
  self.txn_skip = false
end
ON.begin = ON.gtid

function ON.rows(self, ev)
  local t = self.by_name[ev.db .. "\0" .. ev.table]
  if self.start_ts and ev.ts and ev.ts < self.start_ts then
    -- before startTs: not applied
  elseif self.end_ts and ev.ts and ev.ts > self.end_ts then
    self.stop_after_commit = true
    self.txn_skip = true
  elseif t and not self.txn_skip and position.compare(self.txn_start, t.pos) >= 0 then
    self.cur_ev = ev
    self:apply(t, ev.batch)
  end
  ev.batch:free() -- native memory: release now rather than at the next GC cycle
  if ev.pos then self.cur.pos = ev.pos end
end

function ON.commit(self, ev)
  local cur = { file = ev.file or self.cur.file, pos = ev.pos or self.cur.pos, gtid = self.gtid, ts = ev.ts }
  self.cur = cur
  self.last_commit = position.copy(cur)
  self.mid_txn, self.in_src_txn = false, false
  if self.stop_after_commit then
    if self.in_txn then self:flush(self.last_commit) end
    log.info("reached endTs %s at %s", tostring(self.o.endTs), position.format(cur))
    return true
  end
  if self.in_txn then
    local h = self.stream_h
    local idle = h.readable and not h:readable(0)
    if self.txn_rows >= self.max_txn_rows or idle or util.mono() - self.txn_started >= self.flush_interval then
      self:flush(self.last_commit)
    end
  else
    self:advance_idle(self.last_commit)
  end
  return self:caught_up(cur) and not self.in_txn
end

function ON.ddl(self, ev) return self:on_ddl(ev) end

function ON.rotate(self, ev)
  self.cur = { file = ev.file, pos = ev.pos or 4 }
  self.txn_start = position.copy(self.cur)
end

function ON.heartbeat(self, ev)
  self:flush_whole()
  if not self.in_src_txn and ev.file and ev.pos and ev.pos > 0 then
    -- the source sends a heartbeat once it has sent everything before (file, pos): outside a
    -- transaction the stream is in sync there, even when no transaction came (a new binlog file)
    local hb = { file = ev.file, pos = ev.pos, gtid = self.last_commit and self.last_commit.gtid or self.gtid }
    if position.compare(hb, self.cur) > 0 then self.cur = hb end
    if position.compare(hb, self.last_commit) > 0 then self.last_commit = position.copy(hb) end
  end
  self:advance_idle(self.last_commit)
  -- idle source, nothing pending: every table is in sync as of now
  if not self.in_txn and self.ctx.on_checkpoint then self.ctx.on_checkpoint(self.tables, self.last_commit) end
  if self:caught_up(self.cur) and not self.in_txn then return true end
  -- an idle source past endTs: nothing inside the window can still arrive
  if self.end_ts and not self.in_txn and util.now() > self.end_ts + 1 then
    log.info("reached endTs %s (source idle past it) at %s", tostring(self.o.endTs), position.format(self.cur))
    return true
  end
end

function Runner:stream_loop()
  local start = self:stream_start()
  if self:caught_up(start) then
    log.info("sink is already at %s (source at %s): nothing to do", position.format(start), position.format(self.target))
    return self:summary()
  end
  self:stream_settings()
  local h = self:open_stream(start)
  self.cur, self.txn_start, self.gtid, self.stop_after_commit = position.copy(start), position.copy(start), nil, false
  while true do
    if util.stop_requested() or (self.ctx.should_stop and self.ctx.should_stop()) then
      self:flush_whole() -- safe point
      self.sink:rollback()
      self.in_txn = false
      log.info("stopped at %s", position.format(self.last_commit or self.cur))
      break
    end
    local ev, eerr, ecode = h:next(5000)
    if not ev then
      if eerr then
        if ecode == 1236 then
          errors.raise(string.format("binlog stream from source %s failed: %s; the binlog needed was purged or " ..
            "is missing — re-run with a full copy", self.src.c.label, eerr))
        end
        errors.raise_sql(string.format("binlog stream from source %s failed: %s", self.src.c.label, eerr), ecode)
      end
      break
    end
    local on = ON[ev.type]
    if on and on(self, ev) then break end
  end
  self:flush_whole()
  return self:summary()
end

function Runner:summary()
  local out = {}
  for _, t in ipairs(self.tables) do
    out[#out + 1] = { src = t.src_label, dst = t.dst_db .. "." .. t.dst_table, rows = t.applied or 0,
      seconds = 0, cdc = true, position = t.pos }
  end
  return out
end

return M
