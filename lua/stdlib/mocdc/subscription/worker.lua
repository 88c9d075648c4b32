-- The subscriptions' executor and scanner: one worker of `mocdc serve
-- --state-uri`, several of which may share a downstream.
--
-- Worker:run_job runs one snapshot-diff iteration of a claimed job
-- (mocdc.engine.snapdiff: a consistent upstream snapshot, chunk checksums
-- against the stored object list, changed chunks merged against the
-- downstream's rows), fenced at every commit (mocdc.subscription.store). So two
-- workers never both apply an iteration, and an iteration cut short anywhere
-- is simply repeated (iterations are idempotent: every chunk is compared with
-- what the downstream actually holds). At start, pending/running jobs are set
-- complete (seed 003 5.1).
--
-- Worker:scan lists the upstream tables of each subscription: a new table gets
-- a job; a table whose id changed (TRUNCATE, DROP + CREATE) gets a fresh job
-- (the old one is cancelled) whose first iteration reconciles the downstream
-- table with it (emptied by a truncate; re-created when its columns changed);
-- a table dropped upstream is dropped downstream. New upstream columns are
-- added downstream before the next iteration.
local conn = require("mocdc.conn")
local copy = require("mocdc.engine.copy")
local diffsrc = require("mocdc.engine.snapdiff")
local errors = require("mocdc.errors")
local log = require("mocdc.log")
local mo = require("mocdc.engine.matrixone")
local schema = require("mocdc.schema")
local store = require("mocdc.subscription.store")
local util = require("mocdc.util.lib")

local M = {}
local qi, qname = schema.qi, schema.qname
local lit, must, rows = store.lit, store.must, store.rows

---------------------------------------------------------------------------
-- upstream metadata
---------------------------------------------------------------------------

-- Base tables of an upstream database (or one table) with their ids:
-- {name = {id =, name =}}. A truncate or a drop + create changes the id.
function M.upstream_tables(up, db, only)
  local out = {}
  local filter = only and (" AND t.table_name = " .. lit(up, only)) or ""
  if up.flavour == "matrixone" then
    for _, r in ipairs(rows(up, "SELECT relname, rel_id FROM mo_catalog.mo_tables WHERE reldatabase = " .. lit(up, db) ..
      (only and (" AND relname = " .. lit(up, only)) or "") .. " AND relkind = 'r'", "listing upstream tables")) do
      out[r[1]] = { name = r[1], id = tostring(r[2]) }
    end
    return out
  end
  local r = up:query("SELECT t.table_name, s.table_id, UNIX_TIMESTAMP(t.create_time) FROM information_schema.tables t " ..
    "LEFT JOIN information_schema.INNODB_SYS_TABLES s ON s.name = CONCAT(t.table_schema, '/', t.table_name) " ..
    "WHERE t.table_schema = " .. lit(up, db) .. " AND t.table_type IN ('BASE TABLE', 'SYSTEM VERSIONED')" .. filter)
  if not r then -- no PROCESS privilege for INNODB_SYS_TABLES: the creation time tells a recreate
    r = rows(up, "SELECT t.table_name, NULL, UNIX_TIMESTAMP(t.create_time) FROM information_schema.tables t " ..
      "WHERE t.table_schema = " .. lit(up, db) .. " AND t.table_type IN ('BASE TABLE', 'SYSTEM VERSIONED')" .. filter, "listing upstream tables")
  end
  for _, x in ipairs(r) do
    local id = x[2] ~= conn.NULL and x[2] or x[3]
    out[x[1]] = { name = x[1], id = tostring(id == conn.NULL and 0 or math.floor(tonumber(id) or 0)) }
  end
  return out
end

-- Table description for the diff engine (as mocdc.source.mysql's tables()).
function M.describe(up, db, tbl)
  local t = { src_db = db, src_table = tbl, dst_db = db, dst_table = tbl, src_label = db .. "." .. tbl }
  local cols = {}
  for _, c in ipairs(schema.columns(up, db, tbl)) do if not c.generated then cols[#cols + 1] = c end end
  if #cols == 0 then return nil end
  t.columns = cols
  t.key = schema.primary_key(up, db, tbl)
  t.key_idx = {}
  for _, k in ipairs(t.key) do
    for i, c in ipairs(cols) do if c.name:lower() == k:lower() then t.key_idx[#t.key_idx + 1] = i end end
  end
  t.create_sql = schema.show_create(up, db, tbl)
  return t
end

---------------------------------------------------------------------------
-- the worker
---------------------------------------------------------------------------
local Worker = {}
Worker.__index = Worker

-- Flags: --state-uri URI, --owner-id ID, --lease S (30), --scan-interval S (5),
-- --chunk-rows N, --batch-size N, --leaf-rows N, --full-check-interval S.
function M.new(f)
  local owner = f["owner-id"] or string.format("mocdc-%d-%s", util.getpid(), util.uuid7():sub(-12))
  local self = setmetatable({
    f = f, state_uri = f["state-uri"], owner = owner,
    scan_every = tonumber(f["scan-interval"]) or 5,
    opts = { diffChunkRows = f["chunk-rows"], batchSize = f["batch-size"], leafRows = f["leaf-rows"],
      fullCheckInterval = f["full-check-interval"] },
    ups = {}, stats = { iterations = 0, fenced = 0, errors = 0 },
  }, Worker)
  self.store = store.open(self.state_uri, owner, tonumber(f.lease) or 30)
  self.c = self.store.c
  return self
end

function Worker:upstream(task_id, u)
  local e = self.ups[task_id]
  if e and e.uri == u and e.c:ping() then return e.c end
  if e then e.c:close() end
  local c = store.open_upstream(u)
  self.ups[task_id] = { uri = u, c = c }
  return c
end

function Worker:drop_upstream(task_id)
  local e = self.ups[task_id]
  if e then e.c:close() self.ups[task_id] = nil end
end

function Worker:recover() self.store:recover() end

-- Stop holding anything: the upstream connections and the store's.
function Worker:close()
  for id in pairs(self.ups) do self:drop_upstream(id) end
  self.store:close()
end

-- Claim the most overdue job (mocdc.subscription.store). Returns job | nil.
function Worker:claim() return self.store:claim() end

-- One subscription's new / recreated / dropped upstream tables.
function Worker:scan_one(cfg)
  local st = self.store
  local up = self:upstream(cfg.task_id, cfg.upstream)
  local now = M.upstream_tables(up, cfg.db, cfg.table)
  local jobs = st:jobs(cfg.task_id)
  for name, t in pairs(now) do
    local have = false
    for _, j in ipairs(jobs[name] or {}) do
      if j.table_id == t.id then have = true
      else
        st:cancel(j.id)
        st:drop_state(cfg.task_id, j.id)
        log.info("subscription %s: %s.%s was truncated or re-created upstream (id %s -> %s): new job",
          cfg.name, cfg.db, name, j.table_id, t.id)
      end
    end
    if not have then
      st:add_job(cfg.task_id, cfg.db, t.id, name)
      log.info("subscription %s: syncing %s.%s", cfg.name, cfg.db, name)
    end
  end
  for name, list in pairs(jobs) do
    if not now[name] then
      for _, j in ipairs(list) do
        st:cancel(j.id)
        st:drop_state(cfg.task_id, j.id)
      end
      must(self.c, "DROP TABLE IF EXISTS " .. qname(cfg.db, name))
      log.info("subscription %s: %s.%s was dropped upstream: dropped downstream", cfg.name, cfg.db, name)
    end
  end
end

-- Find new / recreated / dropped upstream tables of every subscription.
function Worker:scan()
  for _, cfg in ipairs(self.store:configs()) do
    local ok, e = pcall(self.scan_one, self, cfg)
    if not ok then
      self:drop_upstream(cfg.task_id)
      log.warn("subscription %s: scanning %s failed: %s", cfg.name, log.mask(cfg.upstream), errors.message(e))
    end
  end
end

-- Make the downstream table match the upstream columns (add new columns;
-- re-create it when columns changed or went away). Returns true when the
-- downstream table was (re)created or altered.
function Worker:align_schema(sink, t)
  local c = sink.c
  if not schema.table_exists(c, t.dst_db, t.dst_table) then return false end
  local have = schema.columns(c, t.dst_db, t.dst_table)
  local by = {}
  for _, d in ipairs(have) do by[d.name:lower()] = d end
  local missing, incompatible = {}, #have > #t.columns
  for _, s in ipairs(t.columns) do
    local d = by[s.name:lower()]
    if not d then missing[#missing + 1] = s
    elseif schema.normalize_type(d.column_type) ~= schema.normalize_type(s.column_type) then incompatible = true end
  end
  local src_names = {}
  for _, s in ipairs(t.columns) do src_names[s.name:lower()] = true end
  for _, d in ipairs(have) do if not src_names[d.name:lower()] then incompatible = true end end
  if incompatible then
    must(c, "DROP TABLE " .. qname(t.dst_db, t.dst_table), "re-creating " .. t.src_label)
    log.info("%s changed its columns upstream: re-created downstream", t.src_label)
    return true
  end
  if #missing > 0 then
    for _, s in ipairs(missing) do
      must(c, "ALTER TABLE " .. qname(t.dst_db, t.dst_table) .. " ADD COLUMN " .. qi(s.name) .. " " .. s.column_type ..
        " NULL", "adding column " .. s.name .. " to " .. t.src_label)
      log.info("%s: added column %s %s downstream", t.src_label, s.name, s.column_type)
    end
    return true
  end
  return false
end

-- The iteration's upstream snapshot, in `it`: MatrixOne reads one snapshot of
-- the table ({SNAPSHOT = ...}; it.mosrc, it.mosnap), MySQL a transaction WITH
-- CONSISTENT SNAPSHOT (it.vlo, the change bound); it.info.snapshot_ts.
function Worker:open_snapshot(up, job, it)
  if up.flavour == "matrixone" then
    it.mosrc = mo.wrap(up, { uri = job.upstream })
    it.mosnap = mo.sql.snapshot_prefix("sub_" .. job.task_id .. "_" .. job.id) .. job.lsn
    local ts = it.mosrc:create_snapshot(it.mosnap, { level = "table", db = job.db, table = job.table })
    it.mosrc.snap = it.mosnap
    local sec = math.floor((tonumber(ts) or 0) / 1e9)
    it.info = { snapshot_ts = os.date("!%Y-%m-%d %H:%M:%S", sec) .. string.format(".%06d",
      math.floor(((tonumber(ts) or 0) % 1e9) / 1e3)) }
  else
    it.vlo = diffsrc.version_lo(up, self.opts.changeScanMargin)
    must(up, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    must(up, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
    it.info = { snapshot_ts = rows(up, "SELECT UTC_TIMESTAMP(6)")[1][1] }
  end
end

-- The job's table is gone upstream or has another id: cancel the job (fenced).
-- A re-created table gets a new job from the scanner; a dropped one is
-- dropped downstream too.
function Worker:cancel_gone(job, sink, ids)
  sink:begin()
  self.store:fence(sink.c, job, false)
  self.store:cancel(job.id, sink.c)
  sink:commit()
  self.store:drop_state(job.task_id, job.id)
  if not ids[job.table] then
    must(self.c, "DROP TABLE IF EXISTS " .. qname(job.db, job.table))
    log.info("subscription %s: %s.%s was dropped upstream: dropped downstream", job.name, job.db, job.table)
  end
  return "cancelled"
end

-- One iteration of a claimed job (run_job's protected part): the engine's
-- stats, or "cancelled".
function Worker:iterate(job, sink, up, it)
  self:open_snapshot(up, job, it)
  local info = it.info
  local ids = M.upstream_tables(up, job.db, job.table)
  if not ids[job.table] or ids[job.table].id ~= tostring(job.table_id) then
    up:exec("COMMIT")
    return self:cancel_gone(job, sink, ids)
  end
  local t = M.describe(up, job.db, job.table)
  if self:align_schema(sink, t) then self.store:drop_state(job.task_id, job.id) end
  copy.prepare(t, sink, {})
  local eng = diffsrc.new({ src = it.mosrc or { c = up }, sink = sink, opts = self.opts, hooks = {
    state_id = function() return "job:" .. job.id end,
    no_watermark = true,
    should_stop = function() return util.stop_requested() end,
    before_commit = function(_, _, final) self.store:fence(sink.c, job, final, info) end,
  } })
  eng:prepare(t)
  eng.version_lo = it.vlo
  local st = eng:iterate(t, info)
  if st.gated then
    sink:begin()
    self.store:fence(sink.c, job, true, info)
    sink:commit()
  end
  up:exec("COMMIT")
  return st
end

-- An iteration that raised: both transactions rolled back; fenced off, it is
-- abandoned; stopping, the job is handed back; else the job records the error.
function Worker:failed(job, sink, up, e)
  pcall(sink.rollback, sink)
  if up:is_open() then up:exec("ROLLBACK") end
  if type(e) == "table" and e.fenced == store.Fenced then
    self.stats.fenced = self.stats.fenced + 1
    log.warn("subscription %s: %s", job.name, e.msg)
    return nil
  end
  if errors.is(e) and e.code == 130 then
    -- stopping: hand the job back so another worker continues at once
    self.store:release(job)
    error(e, 0)
  end
  self.stats.errors = self.stats.errors + 1
  local msg = log.mask(errors.message(e)):sub(1, 4000)
  log.error("subscription %s: %s.%s: %s", job.name, job.db, job.table, msg)
  self.store:fail(job, msg)
  if not up:ping() then self:drop_upstream(job.task_id) end
  return nil
end

-- One iteration of one claimed job: its stats, "cancelled", or nil (failed / fenced off).
function Worker:run_job(job, sink)
  local up = self:upstream(job.task_id, job.upstream)
  local it = {}
  local ok, e = pcall(self.iterate, self, job, sink, up, it)
  if it.mosnap and up:is_open() then it.mosrc:drop_snapshot(it.mosnap) end
  if not ok then return self:failed(job, sink, up, e) end
  self.stats.iterations = self.stats.iterations + 1
  if type(e) == "table" then
    local n = e.inserts + e.updates + e.deletes
    local say = n > 0 and log.info or log.debug
    say("subscription %s: %s.%s at %s: %s in %.2f s", job.name, job.db, job.table, it.info.snapshot_ts,
      diffsrc.describe(e), e.seconds)
  end
  return e
end

return M
