-- Snapshot diffing: keeps a sink in sync with a source that has no change log
-- we can read (MatrixOne without DATA BRANCH DIFF, any MySQL-protocol server
-- with load.snapshot{...} and `duration`), one iteration at a time.
--
-- Per table and iteration, inside ONE consistent snapshot of the source:
--  1. gate: `CHECKSUM TABLE` (MariaDB/MySQL; it reads the snapshot) equal to
--     the one stored with the last iteration -> nothing changed, nothing is
--     fetched. Every `fullCheckInterval` seconds (default 300) the chunk sums
--     are recomputed anyway (the gate is a 32-bit CRC sum; the chunks are not).
--     `gate = "auto"` (default) skips it after an iteration that found
--     changes; true: always; false: never.
--  2. recompute the object list's chunk checksums (mocdc.engine.snapdiff_sql) at the stored
--     boundaries and compare them with the list stored in the sink
--     (`mocdc.diff_state`, written in the same sink transaction as the data).
--     The statements run on `checksumParallel` (default 2) source
--     connections at once, all in the iteration's snapshot (see
--     Src:start_helpers in mocdc.source.mysql);
--  3. for each changed chunk: when it holds more than `leafRows` rows, split
--     it at keys sampled from the source and compare the sub-ranges' sums on
--     both servers (data-diff's bisection), recursing into those that differ;
--     otherwise fetch the range from the source and the previous state of
--     the range (the sink's rows, or a time-travel read where the source
--     supports it: `opts.old_table(t)`) and merge them by key in C
--     (rowdiff.rows) into inserts / updates / deletes;
--  4. apply them with the sink (deletes first, REPLACE by key) and, in the
--     same transaction, store the new list and the watermark. Big iterations
--     commit every `batchSize` changed rows with a list that is exact for
--     every chunk (processed chunks carry their new sums, the others their
--     old ones), so a crash at any point loses nothing and repeats nothing.
--  5. rebalance the list for the next iteration: chunks above 2 x chunkRows
--     are split at sampled keys, runs of small ones merged (sums add).
-- A table without stored list (first iteration after a resumed copy, lost
-- state) is reconciled against the sink: same boundaries, sums on both
-- servers, differing chunks merged as above.
--
-- MariaDB system-versioned tables (timestamp-based) keep their history, so no
-- checksum is needed: the keys changed since the last iteration are those with
-- a version created or ended after `vlo` (the earlier of the last snapshot's
-- time and the start of the oldest transaction then active, so a transaction
-- that committed after that snapshot is never missed); only those rows are
-- fetched and merged. Needs the PROCESS privilege (information_schema.innodb_trx);
-- without it the table is diffed by chunk checksums.
--
-- This file is the engine, its iteration of a table and the run loop;
-- engine/snapdiff_ranges.lua the chunk checksums and the row merge of ranges,
-- engine/snapdiff_keys.lua the key-driven modes and their change bound
-- (version_lo), engine/snapdiff_state.lua the stored object list, and
-- engine/snapdiff_sql.lua the SQL.
local cjson = require("cjson")
local copy = require("mocdc.engine.copy")
local diff = require("mocdc.engine.snapdiff_sql")
local errors = require("mocdc.errors")
local job_mod = require("mocdc.pipeline.job")
local keys = require("mocdc.engine.snapdiff_keys")
local log = require("mocdc.log")
local progress = require("mocdc.progress")
local ranges = require("mocdc.engine.snapdiff_ranges")
local schema = require("mocdc.schema")
local snapshot = require("mocdc.source.mysql")
local state_mod = require("mocdc.engine.snapdiff_state")
local stream = require("mocdc.pipeline.stream")
local util = require("mocdc.util.lib")

local M = {}
local Engine = {}
Engine.__index = Engine
for _, part in ipairs({ ranges, keys, state_mod }) do
  for k, f in pairs(part.methods) do Engine[k] = f end
end
-- the engine's public helpers (the subscription worker and the specs use them)
M.version_lo, M.run_all = keys.version_lo, ranges.run_all

local num_opt = require("mocdc.pipeline.options").number

-- The chunk checksum both servers can compute: "crc" (CRC32 rows, two
-- moments) on MariaDB/MySQL; "md5crc" when either side is MatrixOne.
function M.default_mode(src_c, sink_c)
  if src_c.flavour == "matrixone" or (sink_c and sink_c.flavour == "matrixone") then return "md5crc" end
  return "crc"
end

-- Engine.new{src=, sink=, opts=, transforms=, pipeline=}
--   src: a source object with .c (a connection inside the snapshot) and
--        optionally :table_ref(t) / :old_table_ref(t) (time travel);
--   sink: mocdc.sink.mysql; opts: source + save options merged.
function M.new(e)
  local o = e.opts or {}
  local self = setmetatable({
    src = e.src, sink = e.sink, o = o, transforms = e.transforms or {},
    chunk_rows = num_opt(o, "diffChunkRows", 1000),
    leaf_rows = num_opt(o, "leafRows", 20000),
    batch_rows = num_opt(o, "batchSize", 5000),
    full_check = num_opt(o, "fullCheckInterval", 300, 0),
    mode = o.checksum or M.default_mode(e.src.c, e.sink and e.sink.c),
    parallel = num_opt(o, "checksumParallel", 2, 1),
    no_key_max = num_opt(o, "noKeyMaxRows", 1000000),
    max_keys = num_opt(o, "updateColumnMaxKeys", 1000000, 1),
    hooks = e.hooks or {},
  }, Engine)
  if self.mode ~= "crc" and self.mode ~= "md5" and self.mode ~= "md5crc" then
    errors.raise(string.format("option checksum = '%s' must be crc, md5 or md5crc", tostring(self.mode)), 2)
  end
  local g = o.gate
  if g == nil then g = "auto" end
  if g == "true" then g = true elseif g == "false" then g = false end
  if g ~= "auto" and g ~= true and g ~= false then
    errors.raise(string.format("option gate = '%s' must be auto, true or false", tostring(o.gate)), 2)
  end
  self.gate_mode = g
  self.fn = stream.compile(self.transforms)
  return self
end

-- Prepare a table (after copy.prepare): key columns, checks, SQL pieces.
function Engine:prepare(t)
  t.keycols = {}
  for j, ki in ipairs(t.key_idx) do
    local c = t.columns[ki]
    if c.nullable then
      errors.raise(string.format("key column '%s' of %s is nullable; snapshot diffing needs NOT NULL key columns " ..
        "(choose others with idCols, or add a primary key)", c.name, t.src_label), 2)
    end
    t.keycols[j] = c
  end
  t.out_columns = t.out_columns or t.columns
  t.dst_keycols = {}
  local dki = t.dst_key_idx or t.key_idx
  for j, ki in ipairs(dki) do t.dst_keycols[j] = t.out_columns[ki] end
  t.dst_label = t.dst_db .. "." .. t.dst_table
  t.src_ref = self.src.table_ref and self.src:table_ref(t) or schema.qname(t.src_db, t.src_table)
  t.dst_ref = schema.qname(t.dst_db, t.dst_table)
  t.diff_sig = diff.signature(t.columns, self.mode)
  -- sink-side checksums (bisection, reconcile) need the same columns and text
  t.same_shape = #self.transforms == 0
  if #t.keycols > 0 and self.src.c.flavour ~= "matrixone" and self.sink.c.flavour ~= "matrixone" then
    self:check_collations(t)
  end
  t.vcols = nil
  if #t.keycols > 0 and self.src.c.flavour == "mariadb" and self.o.versioned ~= false and self.o.versioned ~= "false" then
    t.vcols = keys.versioning(self.src.c, t)
  end
  t.ucol = nil
  if self.o.updateColumn and not t.vcols then t.ucol = self:update_column(t) end
  if t.ucol then t.diff_sig = t.diff_sig .. ",updateColumn " .. t.ucol end
end

local function new_stats(t)
  return { table = t.src_label, dst = t.dst_label, chunks = 0, changed = 0, rows_fetched = 0, bytes_fetched = 0,
    summary_bytes = 0, sum_queries = 0, bisections = 0, inserts = 0, updates = 0, deletes = 0, commits = 0,
    gated = false, gate_ran = false, seconds = 0, conns = 0, t_gate = 0, t_sums = 0, t_merge = 0, t_apply = 0 }
end
M.new_stats = new_stats

-- Commit the sink transaction of an iteration (or of a piece of it).
function Engine:commit(t, st, final)
  if self.hooks.before_commit then self.hooks.before_commit(t, st, final) end
  self.sink:commit()
  st.commits = st.commits + 1
end

-- Store a baseline for a table just copied in the current snapshot.
function Engine:store_baseline(t, info)
  local st = new_stats(t)
  local list = self:baseline(t, st)
  self.sink:begin()
  self:write_state(t, { sig = t.diff_sig, gate = self:gate(t), checked = util.now(), chunks = list,
    vlo = (t.vcols or t.ucol) and self.version_lo or nil }, info)
  if self.hooks.before_commit then self.hooks.before_commit(t, st, true) end
  self.sink:commit()
  return st
end

-- One iteration of one table (the source connection is inside the snapshot).
-- info: what to store as the watermark position. Returns stats.
function Engine:iterate(t, info)
  local t0 = util.mono()
  local st = new_stats(t)
  local state = self:read_state(t)
  if (t.ucol or t.vcols) and not self.version_lo and not self.noted_no_vlo then
    self.noted_no_vlo = true
    log.warn("%s: diffed by chunk checksums, not by its %s: %s", t.src_label,
      t.ucol and ("updateColumn " .. t.ucol) or "history", tostring(self.version_lo_why))
  end
  -- key-driven tables (history, updateColumn): the changed keys only, except
  -- every fullCheckInterval or with too many changes, when chunk sums are
  -- compared with the sink (that catches what the keys cannot show, e.g. a
  -- hand-set update time)
  local by_keys = t.vcols and self.iterate_versioned or t.ucol and self.iterate_updated
  if by_keys and state and state.vlo and self.version_lo and not t.old_ref then
    if util.now() - (state.checked or 0) < self.full_check then
      local st2 = by_keys(self, t, state, info, st, t0)
      if st2 then return st2 end
    end
    st.full_check = true
    state = nil
  end
  if state and state.keyed then
    -- the stored chunk sums are those of the last full check, not of the
    -- sink now: compare with the sink itself
    state = nil
  end
  local tg = util.mono()
  local gate = self:gate(t, state)
  st.t_gate, st.gate_ran = util.mono() - tg, gate ~= nil
  if state and gate and state.gate == gate and util.now() - (state.checked or 0) < self.full_check then
    st.gated, st.chunks = true, #state.chunks
  else
    self:iterate_chunks(t, state, gate, info, st)
  end
  st.seconds = util.mono() - t0
  return st
end

-- The object lists to compare: the stored one and the source's sums at its
-- boundaries, or (no stored list) a fresh one and the sink's (or the
-- time-travel read's) sums at its boundaries. Returns old, cur, reconcile.
function Engine:chunk_lists(t, state, st)
  if state then return state.chunks, self:sum_list(t, state.chunks, st), false end
  local cur_list = self:baseline(t, st)
  local old_list = {}
  if t.old_ref then
    old_list = self:sums("old", t, diff.ranges(cur_list), st)
  elseif t.same_shape then
    old_list = self:sums("sink", t, diff.ranges(cur_list), st)
  end
  return old_list, cur_list, true
end

-- Compare the chunk sums and merge the changed chunks, committing every
-- batchSize changed rows with a list exact for every chunk.
function Engine:iterate_chunks(t, state, gate, info, st)
  local old_list, cur_list, reconcile = self:chunk_lists(t, state, st)
  st.chunks = #cur_list
  if #t.keycols == 0 and cur_list[1].n > self.no_key_max and (not old_list[1] or old_list[1].n ~= cur_list[1].n or
      old_list[1].s ~= cur_list[1].s) then
    errors.raise(string.format("%s has no primary key and %d rows: diffing a keyless table holds it in memory " ..
      "(limit noKeyMaxRows = %d); add a primary key or give idCols", t.src_label, cur_list[1].n, self.no_key_max))
  end
  local changed = diff.changed(old_list, cur_list)
  st.changed = #changed
  -- the list as the sink holds it while we go: processed chunks take new sums
  local committed = {}
  for i, c in ipairs(cur_list) do
    local o = old_list[i]
    committed[i] = { lo = c.lo, n = o and o.n or -1, s = o and o.s or "" }
  end
  local txn = state_mod.txn(self, t, st, info)
  local function state_of(final, in_txn)
    if final then
      local list = diff.rebalance(cur_list, self.chunk_rows, self:splitter(t, cur_list, st))
      return { sig = t.diff_sig, gate = gate, checked = util.now(), chunks = list,
        vlo = (t.vcols or t.ucol) and self.version_lo or nil, busy = #changed > 0 }
    elseif in_txn and not reconcile then
      return { sig = t.diff_sig, gate = nil, checked = state and state.checked or 0, chunks = committed }
    end
  end
  local function tick() if txn.out:count() >= self.batch_rows then txn:flush(false, state_of) end end
  txn:run(function()
    for _, i in ipairs(changed) do
      txn:check_stop()
      local r_hi = cur_list[i + 1] and cur_list[i + 1].lo or nil
      -- a piece committed in the middle of a chunk leaves it "unknown" in the
      -- stored list, so the next iteration processes it again
      committed[i].n, committed[i].s = -1, ""
      self:process_range(t, cur_list[i].lo, r_hi, cur_list[i].n, txn.out, st, 0, tick)
      committed[i].n, committed[i].s = cur_list[i].n, cur_list[i].s
      tick()
    end
    txn:flush(true, state_of)
  end)
  st.reconciled = reconcile
end

M.Engine = Engine

---------------------------------------------------------------------------
-- the pipeline runner: load.snapshot{...} with duration = N
---------------------------------------------------------------------------

local function describe(st)
  if st.gated then return "unchanged (checksum gate)" end
  if st.versioned then
    return string.format("%d keys changed (system versioning), fetched %d rows (%s bytes), applied %d inserts, " ..
      "%d updates, %d deletes", st.changed, st.rows_fetched, progress.fmt_int(st.bytes_fetched), st.inserts, st.updates,
      st.deletes)
  end
  if st.updated then
    return string.format("%d keys updated (updateColumn), %d of %d chunks with deletes, fetched %d rows (%s bytes), " ..
      "applied %d inserts, %d updates, %d deletes", st.keys, st.changed, st.chunks, st.rows_fetched,
      progress.fmt_int(st.bytes_fetched), st.inserts, st.updates, st.deletes)
  end
  return string.format("%d of %d chunks changed, fetched %d rows (%s bytes), applied %d inserts, %d updates, " ..
    "%d deletes", st.changed, st.chunks, st.rows_fetched, progress.fmt_int(st.bytes_fetched), st.inserts,
    st.updates, st.deletes)
end

-- Where an iteration's time went (--verbose).
function M.timings(st)
  return string.format("gate %.3f s, chunk sums/counts %.3f s (%d ranges, %d connections), fetch + merge %.3f s, " ..
    "apply + commit %.3f s", st.t_gate, st.t_sums, st.sum_queries, st.conns, st.t_merge, st.t_apply)
end
M.describe = describe

-- Interval between iterations: save.append's duration (or the source's
-- syncInterval / duration).
function M.interval(job)
  local so = job.stream.source.opts
  local v = job.opts.duration or so.duration or so.syncInterval or job.opts.syncInterval
  if v == nil then return nil end
  local n = tonumber(v)
  if not n or n < 0 then errors.raise(string.format("duration '%s' is not a number of seconds", tostring(v)), 2) end
  return n
end

-- The source columns of a table now (detects schema changes between iterations).
local function same_columns(c, t)
  local cols = schema.columns(c, t.src_db, t.src_table)
  local now = {}
  for _, col in ipairs(cols) do if not col.generated then now[#now + 1] = col end end
  return diff.signature(now) == diff.signature(t.columns), now
end

-- What the snapshot-diff and MatrixOne runners share: open the sink (it must
-- be SQL: its rows are the previous state) and the checkpoint store, resolve
-- and prepare the tables, build the engine. `opened` receives sink and store
-- as soon as they exist, so M.teardown closes them whatever failed.
-- before_engine(list), when given, runs once the tables are prepared.
function M.setup(job, ctx, src, opened, need_sql_sink, before_engine)
  local sink = job_mod.open_sink(job, ctx.name)
  opened.sink = sink
  if not sink.apply_batch or not sink.c then errors.raise(need_sql_sink, 2) end
  local dir
  opened.store, dir = job_mod.open_store(job, ctx.name)
  job_mod.claim(sink, dir, ctx)
  local opts = {}
  for k, v in pairs(job.stream.source.opts) do opts[k] = v end
  for k, v in pairs(job.opts) do opts[k] = v end
  local list = src:tables()
  for _, t in ipairs(list) do copy.prepare(t, sink, job.stream.transforms) end
  if before_engine then before_engine(list) end
  local eng = M.new({ src = src, sink = sink, opts = opts, transforms = job.stream.transforms,
    hooks = { should_stop = ctx.should_stop } })
  for _, t in ipairs(list) do eng:prepare(t) end
  eng:ensure_state_table()
  return sink, opened.store, list, eng
end

function M.teardown(src, opened)
  src:close()
  if opened.sink then pcall(opened.sink.rollback, opened.sink) opened.sink:close() end
  if opened.store then opened.store:close() end
end

-- A source table still as the pipeline found it, or one line saying what changed.
local function check_columns(c, t)
  local same, now = same_columns(c, t)
  if not same and #now == 0 and not schema.table_exists(c, t.src_db, t.src_table) then
    errors.raise(string.format("source table %s no longer exists (dropped or renamed) since the pipeline " ..
      "started; take it out of the selection, or re-create it, and restart the pipeline", t.src_label), 2)
  end
  if not same then
    errors.raise(string.format("source table %s changed its columns since the pipeline started; restart " ..
      "the pipeline (the sink table must be altered to match first)", t.src_label), 2)
  end
end

-- One table in the iteration's snapshot: its full copy when not copied yet,
-- else one diff iteration. r: {job, src, sink, store, eng}. Returns its summary.
local function sync_table(r, t, info)
  local sink, eng = r.sink, r.eng
  check_columns(r.src.c, t)
  local wm = sink:read_watermark(t.src_label, t.dst_label)
  if not wm or wm.phase == "full" then
    local fresh = wm == nil
    local cctx = copy.context(r.src, sink, r.store, r.job.stream.transforms, r.job.stream.source.opts,
      { position = info, final_phase = "diff" })
    local n, el = copy.copy_table(cctx, t)
    log.info("copied %s -> %s: %s rows in %.2f s", t.src_label, t.dst_label, progress.fmt_int(n), el)
    if fresh then
      -- same snapshot as the copy: the list describes exactly what the sink holds
      eng:store_baseline(t, info)
    else
      eng:delete_state(t)
    end
    return { src = t.src_label, dst = t.dst_label, rows = n, seconds = el, full = true }
  end
  local st = eng:iterate(t, info)
  local n = st.inserts + st.updates + st.deletes
  if st.gated or n == 0 then
    log.debug("diff %s -> %s: %s in %.3f s", t.src_label, t.dst_label, describe(st), st.seconds)
  else
    log.info("diff %s -> %s: %s in %.2f s", t.src_label, t.dst_label, describe(st), st.seconds)
  end
  log.debug("diff %s: %s", t.src_label, M.timings(st))
  return { src = t.src_label, dst = t.dst_label, rows = n, seconds = st.seconds, skipped = n == 0, stats = st }
end

-- run(job, ctx, run_opts): full copy of tables not copied yet, then one diff
-- iteration every `duration` seconds (run_opts.once: until the sink is in
-- sync once). Returns the summary of the last iteration.
function M.run(job, ctx, run_opts)
  run_opts = run_opts or {}
  local interval = M.interval(job) or 0
  local src = snapshot.open(job.stream.source.opts)
  local opened = {}
  local ok, res = pcall(function()
    local sink, store, list, eng = M.setup(job, ctx, src, opened,
      "snapshot diffing needs a mysql:// sink: it reads the sink's rows as the previous state")
    local r = { job = job, src = src, sink = sink, store = store, eng = eng }
    local iteration = 0
    local summary
    -- tables diffed by their history or updateColumn need the change-scan bound
    local keyed = false
    for _, t in ipairs(list) do if t.vcols or t.ucol then keyed = true end end
    while true do
      iteration = iteration + 1
      local started = util.mono()
      if keyed then eng.version_lo, eng.version_lo_why = M.version_lo(src.c, eng.o.changeScanMargin) end
      src:begin_snapshot({ helpers = eng.parallel - 1, tables = list })
      summary = {}
      local info = { iteration = iteration, at = log.timestamp() }
      for _, t in ipairs(list) do
        summary[#summary + 1] = sync_table(r, t, info)
        store:set("table/" .. t.src_label, cjson.encode({ phase = "diff", iteration = iteration }))
      end
      src:end_snapshot()
      if not job_mod.next_iteration(ctx, run_opts, summary, iteration, interval, started, "the last commit") then
        break
      end
    end
    return summary
  end)
  M.teardown(src, opened)
  if not ok then error(res, 0) end
  return res
end

return M
