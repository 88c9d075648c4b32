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
local batchlib = require("mocdc.batch")
local cjson = require("cjson")
local copy = require("mocdc.engine.copy")
local diff = require("mocdc.engine.snapdiff_sql")
local rowdiff = require("mocdc.rowdiff")
local errors = require("mocdc.errors")
local log = require("mocdc.log")
local progress = require("mocdc.progress")
local schema = require("mocdc.schema")
local stream = require("mocdc.pipeline.stream")
local util = require("mocdc.util.lib")

local M = {}
local Engine = {}
Engine.__index = Engine

local num_opt = require("mocdc.pipeline.options").number

-- Lower bound for the next change scan of system-versioned tables and
-- update-column tables, taken BEFORE the snapshot starts. A change that is not
-- in the snapshot commits later, but carries the start time of its statement,
-- and that statement was either running when the processlist was read (its
-- start), or done inside a transaction still open and written to when
-- information_schema.innodb_trx was read just after (trx_started: the
-- server's OS time zone, whole seconds, the earlier reading in the hour a
-- daylight-saving change repeats), or it started after that. The earliest of
-- those, less `margin` seconds (default 2): a transaction's first statement
-- can start before InnoDB starts the transaction (opening tables, waiting for
-- a metadata lock); longer waits are caught by the full check
-- (fullCheckInterval), which both key-driven modes run.
-- nil, why when it cannot be known: not MariaDB, no PROCESS privilege, a stale
-- innodb_trx, or a replica / Galera node (replicated rows carry the primary's
-- times, which arrive as late as the replica lags).
function M.version_lo(c, margin)
  if c.flavour ~= "mariadb" then return nil, "the source is not MariaDB" end
  local replica = "the source is a replica: its rows carry the primary's times, which arrive as late as it lags " ..
    "(point the pipeline at the primary to use them)"
  local slaves = c:query("SHOW ALL SLAVES STATUS") -- needs a privilege; the processlist check below does not
  if type(slaves) == "table" and #slaves > 0 then return nil, replica end
  local ws = c:query("SHOW GLOBAL VARIABLES LIKE 'wsrep_on'")
  if type(ws) == "table" and ws[1] and tostring(ws[1][2]):upper() == "ON" then
    return nil, "the source is a Galera node: transactions of the other nodes arrive with their own times"
  end
  margin = tonumber(margin) or 2
  -- 1. now, and the statements running now (their start)
  local p, perr = c:query("SELECT UTC_TIMESTAMP(6), (SELECT MIN(UTC_TIMESTAMP(6) - INTERVAL ROUND(time_ms * 1000) " ..
    "MICROSECOND) FROM information_schema.processlist WHERE id <> CONNECTION_ID() AND command NOT IN ('Sleep', " ..
    "'Daemon', 'Binlog Dump', 'Binlog Dump GTID')), (SELECT COUNT(*) FROM information_schema.processlist WHERE " ..
    "command IN ('Slave_SQL', 'Slave_worker'))")
  if type(p) ~= "table" or not p[1] then return nil, "reading the processlist failed (" .. tostring(perr) .. ")" end
  if (tonumber(p[1][3]) or 0) > 0 then return nil, replica end
  local lo = p[1][1]
  if type(p[1][2]) == "string" and p[1][2] < lo then lo = p[1][2] end
  -- 2. the transactions open now that have written. information_schema.innodb_trx
  -- is a cache refreshed at most every 100 ms (and not while it keeps being
  -- read): it is fresh when it lists a transaction of ours begun after step 1.
  local tb
  for attempt = 1, 4 do
    if attempt > 1 then util.sleep(0.12) end
    local ok, err = c:exec("START TRANSACTION WITH CONSISTENT SNAPSHOT")
    if not ok then return nil, "starting a transaction failed (" .. tostring(err) .. ")" end
    -- trx_started is in the server's OS time zone, whole seconds; in the hour a
    -- daylight-saving change repeats, the earlier reading of it is taken
    local r, rerr = c:query("SELECT SUM(trx_mysql_thread_id = CONNECTION_ID()), " ..
      "(SELECT IF(CONVERT_TZ(u - INTERVAL 1 HOUR, '+00:00', 'SYSTEM') = l, u - INTERVAL 1 HOUR, u) FROM (SELECT " ..
      "MIN(trx_started) AS l, CONVERT_TZ(MIN(trx_started), 'SYSTEM', '+00:00') AS u FROM information_schema.innodb_trx " ..
      "WHERE trx_rows_modified > 0) AS m) FROM information_schema.innodb_trx")
    c:exec("COMMIT")
    if type(r) ~= "table" or not r[1] then
      return nil, "reading the oldest open transaction failed (" .. tostring(rerr) .. "; it needs the PROCESS privilege)"
    end
    if tonumber(r[1][1]) == 1 then tb = type(r[1][2]) == "string" and r[1][2] or false break end
  end
  if tb == nil then return nil, "information_schema.innodb_trx was not refreshed (it is read too often)" end
  if tb and tb < lo then lo = tb end
  local m = c:query("SELECT '" .. lo .. "' - INTERVAL " .. math.floor(margin * 1e6) .. " MICROSECOND")
  if type(m) ~= "table" or not m[1] or type(m[1][1]) ~= "string" then return nil, "the server returned no time" end
  return m[1][1]
end

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
    t.vcols = M.versioning(self.src.c, t)
  end
  t.ucol = nil
  if self.o.updateColumn and not t.vcols then t.ucol = self:update_column(t) end
  if t.ucol then t.diff_sig = t.diff_sig .. ",updateColumn " .. t.ucol end
end

-- The updateColumn of a table, checked, or nil (then chunk checksums).
function Engine:update_column(t)
  local want = tostring(self.o.updateColumn)
  local col
  for _, c in ipairs(t.columns) do if c.name:lower() == want:lower() then col = c end end
  if not col then
    log.info("%s has no column %s (updateColumn): diffed by chunk checksums", t.src_label, want)
    return nil
  end
  if self.src.c.flavour ~= "mariadb" then
    errors.raise(string.format("updateColumn needs a MariaDB source (%s is %s): it bounds the change scan with " ..
      "information_schema.innodb_trx and processlist.time_ms; remove the option", self.src.c.label,
      self.src.c.flavour), 2)
  end
  if #t.keycols == 0 or not t.same_shape then
    log.info("%s: updateColumn needs a key and no transforms: diffed by chunk checksums", t.src_label)
    return nil
  end
  local c = self.src.c
  local def = col.default
  if col.data_type ~= "timestamp" or not (col.extra or ""):find("on update current_timestamp", 1, true) or
      col.nullable or type(def) ~= "string" or not def:lower():find("^current_timestamp") then
    errors.raise(string.format("updateColumn %s of %s is %s%s%s%s; it must be a TIMESTAMP NOT NULL DEFAULT " ..
      "CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP column (the server then sets it on every insert and update; a " ..
      "DATETIME depends on the writer's time zone): fix the column or drop the updateColumn option", col.name,
      t.src_label, col.column_type, col.nullable and " NULL" or " NOT NULL",
      type(def) == "string" and (" DEFAULT " .. def) or "", (col.extra or "") ~= "" and (" " .. col.extra) or ""), 2)
  end
  local idx = c:query("SELECT 1 FROM information_schema.statistics WHERE table_schema = '" .. c:escape(t.src_db) ..
    "' AND table_name = '" .. c:escape(t.src_table) .. "' AND column_name = '" .. c:escape(col.name) ..
    "' AND seq_in_index = 1 LIMIT 1")
  if type(idx) == "table" and not idx[1] then
    log.warn("%s: no index starts with updateColumn %s, so every iteration scans the table to find the changed " ..
      "rows; add one (ALTER TABLE ... ADD INDEX (%s))", t.src_label, col.name, col.name)
  end
  t.ucol_fsp = tonumber(tostring(col.column_type):match("%((%d)%)")) or 0
  return col.name
end

-- Row start / end columns of a timestamp-versioned MariaDB table, or nil.
function M.versioning(c, t)
  local rows = c:query("SELECT table_type FROM information_schema.tables WHERE table_schema = '" .. c:escape(t.src_db) ..
    "' AND table_name = '" .. c:escape(t.src_table) .. "'")
  if type(rows) ~= "table" or not rows[1] or rows[1][1] ~= "SYSTEM VERSIONED" then return nil end
  local ddl = t.create_sql or schema.show_create(c, t.src_db, t.src_table)
  local rs, re, ls
  for line in ddl:gmatch("[^\n]+") do
    local name, rest = schema.read_ident(line)
    if name and line:find("GENERATED ALWAYS AS ROW START", 1, true) then rs, ls = name, rest:match("^%s*(%w+)") end
    if name and line:find("GENERATED ALWAYS AS ROW END", 1, true) then re = name end
  end
  if rs and re then
    -- explicit columns: only timestamps (trx-id versioning is not a time)
    if not ls or not ls:lower():match("^timestamp") then return nil end
    return { start = rs, stop = re }
  end
  return { start = "row_start", stop = "row_end" }
end

-- Key ranges are evaluated by both servers: string keys must sort alike.
function Engine:check_collations(t)
  local function coll(c, db, tbl, col)
    local rows = c:query("SELECT collation_name FROM information_schema.columns WHERE table_schema = '" ..
      c:escape(db) .. "' AND table_name = '" .. c:escape(tbl) .. "' AND column_name = '" .. c:escape(col) .. "'")
    return rows and rows[1] and rows[1][1]
  end
  for j, kc in ipairs(t.keycols) do
    if kc.class == "str" then
      local a = coll(self.src.c, t.src_db, t.src_table, kc.name)
      local b = coll(self.sink.c, t.dst_db, t.dst_table, t.dst_keycols[j].name)
      if type(a) == "string" and type(b) == "string" and a ~= b then
        errors.raise(string.format("key column '%s' has collation %s in %s but %s in sink table %s; snapshot " ..
          "diffing compares key ranges on both servers: give the sink column the same collation", kc.name, a,
          t.src_label, b, t.dst_label), 2)
      end
    end
  end
end

---------------------------------------------------------------------------
-- reading
---------------------------------------------------------------------------

local function q(c, sql, what)
  local rows, err, code, sqlstate = c:query(sql)
  if not rows then
    errors.raise_sql(string.format("%s on %s failed: %s", what, c.label or "server", tostring(err)), code, sqlstate)
  end
  return rows
end

-- Sums of ranges on the source ("src") or on the sink ("sink"); array of {n=, s=}.
function Engine:sums(side, t, ranges, st)
  if #ranges == 0 then return {} end
  local c, ref, cols, keys
  if side == "src" then
    c, ref, cols, keys = self.src.c, t.src_ref, t.columns, t.keycols
  elseif side == "old" then
    c, ref, cols, keys = self.src.c, t.old_ref, t.columns, t.keycols
  else
    c, ref, cols, keys = self.sink.c, t.dst_ref, t.out_columns, t.dst_keycols
  end
  local out = {}
  local conns = { c }
  if side == "src" then
    for _, h in ipairs(self.src.helpers_active or {}) do conns[#conns + 1] = h end
  end
  local t0 = util.mono()
  -- statements of at most 100 ranges, as many per connection (balanced waves)
  if side == "src" then st.conns = math.max(st.conns, #conns) end
  local nstmt = #conns * math.ceil(#ranges / (100 * #conns))
  local per = math.max(1, math.ceil(#ranges / nstmt))
  M.run_all(conns, diff.sums_sql(ref, cols, keys, ranges, { mode = self.mode, per_statement = per }),
    "checksumming " .. t.src_label,
    function(rows)
      for _, r in ipairs(rows) do
        out[tonumber(r[1])] = diff.sum_of(r, 2)
        st.summary_bytes = st.summary_bytes + #tostring(r[3]) + 16
      end
    end)
  st.sum_queries = st.sum_queries + #ranges
  st.t_sums = st.t_sums + (util.mono() - t0)
  return out
end

-- Run read-only statements on several connections at once (send, then
-- reap_query: no threads), handing each result to on_rows in any order.
-- An error is raised once every statement sent has been reaped, so the
-- connections stay usable.
function M.run_all(conns, stmts, what, on_rows)
  if #conns == 1 or #stmts == 1 then
    for _, sql in ipairs(stmts) do on_rows(q(conns[1], sql, what)) end
    return
  end
  local i = 1
  while i <= #stmts do
    local wave, failed = {}, nil
    for _, c in ipairs(conns) do
      if i > #stmts then break end
      local ok, err, code = c:send(stmts[i])
      if ok then wave[#wave + 1] = c else failed = failed or { c, err, code } end
      i = i + 1
    end
    local raised
    for _, c in ipairs(wave) do
      local rows, err, code = c:reap_query()
      if rows then
        if not failed and not raised then
          local ok, e = pcall(on_rows, rows)
          if not ok then raised = e end
        end
      else
        failed = failed or { c, err, code }
      end
    end
    if failed then
      errors.raise_sql(string.format("%s on %s failed: %s", what, failed[1].label or "server", tostring(failed[2])), failed[3])
    end
    if raised then error(raised, 0) end
  end
end

-- Boundary keys every `step` rows of a source range.
function Engine:sample(t, lo, hi, step, st)
  local rows = q(self.src.c, diff.sample_sql(t.src_ref, t.keycols, lo, hi, math.max(1, math.floor(step))),
    "sampling chunk boundaries of " .. t.src_label)
  st.summary_bytes = st.summary_bytes + #rows * 16
  local out = {}
  for i, r in ipairs(rows) do
    local k = {}
    for j = 1, #t.keycols do k[j] = r[j] end
    out[i] = k
  end
  return out
end

-- Rows of a range into a new batch.
function Engine:fetch(side, t, lo, hi, st)
  local c, ref, cols, keys
  if side == "src" then c, ref, cols, keys = self.src.c, t.src_ref, t.columns, t.keycols
  elseif side == "old" then c, ref, cols, keys = self.src.c, t.old_ref, t.columns, t.keycols
  else c, ref, cols, keys = self.sink.c, t.dst_ref, t.out_columns, t.dst_keycols end
  local sql = diff.select_sql(ref, cols, keys, lo, hi)
  local cur, err, code = c:stream(sql)
  if not cur then
    errors.raise_sql(string.format("reading %s from %s failed: %s", side == "sink" and t.dst_label or t.src_label,
      c.label, tostring(err)), code)
  end
  local b = batchlib.new(cols)
  while true do
    local n, ferr, fcode, fstate = cur:fetch(b, 100000)
    if not n then
      cur:close()
      errors.raise_sql(string.format("reading %s from %s failed: %s", t.src_label, c.label, tostring(ferr)), fcode, fstate)
    end
    if n == 0 then break end
  end
  cur:close()
  st.rows_fetched = st.rows_fetched + b:count()
  st.bytes_fetched = st.bytes_fetched + b:bytes()
  return b
end

-- Transform source rows into sink rows (only with transforms).
function Engine:transform(t, b)
  local out = batchlib.new(t.out_columns)
  for i = 1, b:count() do
    local _, _, row = b:get_named(i)
    local ok, res = pcall(self.fn, row)
    if not ok then
      local e = type(res) == "table" and res or { msg = tostring(res) }
      errors.raise(string.format("transform %s at %s failed on %s: %s", e.transform or "?", e.where or "?",
        t.src_label, e.msg))
    end
    if res ~= nil then out:add_named("insert", nil, res) end
  end
  b:free()
  return out
end

-- Merge one range: previous state vs current source rows -> out.
function Engine:merge_range(t, lo, hi, out, st)
  local t0 = util.mono()
  local cur = self:fetch("src", t, lo, hi, st)
  local old
  if t.old_ref then
    old = self:fetch("old", t, lo, hi, st)
  else
    old = self:fetch("sink", t, lo, hi, st)
  end
  if self.fn then
    cur = self:transform(t, cur)
    if t.old_ref then old = self:transform(t, old) end
  end
  local key = (#t.keycols > 0) and (t.dst_key_idx or t.key_idx) or {}
  local i, u, d = rowdiff.rows(old, cur, key, out)
  st.inserts, st.updates, st.deletes = st.inserts + i, st.updates + u, st.deletes + d
  old:free()
  cur:free()
  st.t_merge = st.t_merge + (util.mono() - t0)
end

-- A changed range holding `n` current rows: bisect while it is big.
-- tick() runs after each merged range (it may commit a piece).
function Engine:process_range(t, lo, hi, n, out, st, depth, tick)
  if #t.keycols > 0 and n > self.leaf_rows and depth < 8 then
    local bounds = self:sample(t, lo, hi, math.ceil(n / 16), st)
    if #bounds > 0 then
      local subs = {}
      local prev = lo
      for _, b in ipairs(bounds) do
        subs[#subs + 1] = { lo = prev, hi = b }
        prev = b
      end
      subs[#subs + 1] = { lo = prev, hi = hi }
      local a = self:sums("src", t, subs, st)
      local b
      if t.old_ref then b = self:sums("old", t, subs, st)
      elseif t.same_shape then b = self:sums("sink", t, subs, st) end
      st.bisections = st.bisections + 1
      for i, r in ipairs(subs) do
        if not b or a[i].n ~= b[i].n or a[i].s ~= b[i].s then
          self:process_range(t, r.lo, r.hi, a[i].n, out, st, depth + 1, tick)
        end
      end
      return
    end
  end
  self:merge_range(t, lo, hi, out, st)
  if tick then tick() end
end

---------------------------------------------------------------------------
-- state
---------------------------------------------------------------------------

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

-- The table's CHECKSUM TABLE in the snapshot, or nil (gate off, MatrixOne,
-- time travel). With gate = "auto" (default) it is skipped after an
-- iteration that found changes (`state.busy`): a table that changes all the
-- time would pay it on top of the chunk sums at every iteration.
function Engine:gate(t, state)
  if self.gate_mode == false then return nil end
  if self.gate_mode == "auto" and state and state.busy then return nil end
  local c = self.src.c
  if c.flavour == "matrixone" or t.old_ref then return nil end
  local rows = c:query("CHECKSUM TABLE " .. schema.qname(t.src_db, t.src_table))
  local v = rows and rows[1] and rows[1][2]
  if type(v) ~= "string" then return nil end
  return v
end

-- Sum a chunk list of the current source (all chunks summed).
function Engine:sum_list(t, chunks, st)
  local sums = self:sums("src", t, diff.ranges(chunks), st)
  local out = {}
  for i, c in ipairs(chunks) do out[i] = { lo = c.lo, n = sums[i].n, s = sums[i].s } end
  return out
end

-- A fresh object list of the current source.
function Engine:baseline(t, st)
  local bounds = {}
  if #t.keycols > 0 then bounds = self:sample(t, nil, nil, self.chunk_rows, st) end
  return self:sum_list(t, diff.from_bounds(bounds), st)
end

-- Split function for rebalance: sample inside the chunk, sum the parts.
function Engine:splitter(t, list, st)
  return function(i, c)
    if #t.keycols == 0 then return { c } end
    local hi = list[i + 1] and list[i + 1].lo or nil
    local bounds = self:sample(t, c.lo, hi, self.chunk_rows, st)
    if #bounds == 0 then return { c } end
    local parts = { { lo = c.lo } }
    for _, b in ipairs(bounds) do parts[#parts + 1] = { lo = b } end
    local ranges = {}
    for k, p in ipairs(parts) do ranges[k] = { lo = p.lo, hi = parts[k + 1] and parts[k + 1].lo or hi } end
    local sums = self:sums("src", t, ranges, st)
    for k, p in ipairs(parts) do p.n, p.s = sums[k].n, sums[k].s end
    return parts
  end
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
  local sink = self.sink
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
  local now = util.now()
  if state and gate and state.gate == gate and now - (state.checked or 0) < self.full_check then
    st.gated, st.chunks = true, #state.chunks
    st.seconds = util.mono() - t0
    return st
  end
  local old_list, cur_list, reconcile
  if state then
    old_list = state.chunks
    cur_list = self:sum_list(t, old_list, st)
  else
    -- no stored list: compare with what the sink holds
    reconcile = true
    cur_list = self:baseline(t, st)
    if t.old_ref then
      old_list = self:sums("old", t, diff.ranges(cur_list), st)
    elseif t.same_shape then
      old_list = self:sums("sink", t, diff.ranges(cur_list), st)
    else
      old_list = {}
    end
  end
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
  local out = batchlib.new(t.out_columns)
  local in_txn = false
  local function flush(final)
    local ta = util.mono()
    if out:count() > 0 then
      if not in_txn then sink:begin() in_txn = true end
      sink:apply_batch(out, t, "replace")
      out:clear()
    end
    if final then
      local list = diff.rebalance(cur_list, self.chunk_rows, self:splitter(t, cur_list, st))
      if not in_txn then sink:begin() in_txn = true end
      self:write_state(t, { sig = t.diff_sig, gate = gate, checked = util.now(), chunks = list,
        vlo = (t.vcols or t.ucol) and self.version_lo or nil, busy = #changed > 0 }, info)
    elseif in_txn and not reconcile then
      self:write_state(t, { sig = t.diff_sig, gate = nil, checked = state and state.checked or 0,
        chunks = committed }, info)
    end
    if in_txn then
      self:commit(t, st, final)
      in_txn = false
    end
    st.t_apply = st.t_apply + (util.mono() - ta)
  end
  local ok, err = pcall(function()
    for _, i in ipairs(changed) do
      local stop = util.stop_requested() or (self.hooks.should_stop and self.hooks.should_stop())
      if stop then errors.raise("interrupted; the next iteration continues from the last commit", 130) end
      local r_hi = cur_list[i + 1] and cur_list[i + 1].lo or nil
      -- a piece committed in the middle of a chunk leaves it "unknown" in the
      -- stored list, so the next iteration processes it again
      committed[i].n, committed[i].s = -1, ""
      self:process_range(t, cur_list[i].lo, r_hi, cur_list[i].n, out, st, 0, function()
        if out:count() >= self.batch_rows then flush(false) end
      end)
      committed[i].n, committed[i].s = cur_list[i].n, cur_list[i].s
      if out:count() >= self.batch_rows then flush(false) end
    end
    flush(true)
  end)
  out:free()
  if not ok then
    if in_txn then sink:rollback() end
    error(err, 0)
  end
  st.reconciled = reconcile or false
  st.seconds = util.mono() - t0
  return st
end

-- System-versioned tables: fetch only the rows whose key changed since state.vlo.
function Engine:iterate_versioned(t, state, info, st, t0)
  st.versioned = true
  return self:iterate_keys(t, state, info, st, t0,
    diff.versioned_changes_sql(t.src_ref, t.keycols, t.vcols.start, t.vcols.stop, state.vlo))
end

-- Tables with an updateColumn: the rows updated or inserted since state.vlo
-- come from the column (an index range scan); deletes from row counts: once
-- those rows are applied, the sink holds every source row plus the rows
-- deleted since, so equal COUNT(*)s on both sides mean no delete, and
-- otherwise the chunks whose counts differ are merged like changed chunks.
function Engine:iterate_updated(t, state, info, st, t0)
  local key_sql = diff.updated_keys_sql(t.src_ref, t.keycols, t.ucol, state.vlo, t.ucol_fsp)
  st.updated = true
  return self:iterate_keys(t, state, info, st, t0, key_sql,
    function(out, apply, tick)
      apply()
      local src_n, dst_n = self:count_both(t, { {} }, st)
      if src_n[1] == dst_n[1] then return end
      local ranges = diff.ranges(state.chunks)
      src_n, dst_n = self:count_both(t, ranges, st)
      for i, r in ipairs(ranges) do
        if src_n[i] ~= dst_n[i] then
          st.changed = st.changed + 1
          self:process_range(t, r.lo, r.hi, src_n[i], out, st, 0, tick)
        end
      end
    end)
end

-- Row counts of ranges on the source (all its connections) and on the sink
-- (its own transaction: it sees what this iteration applied), at the same time.
function Engine:count_both(t, ranges, st)
  local t0 = util.mono()
  local src_n, dst_n = {}, {}
  local sink_stmts = diff.counts_sql(t.dst_ref, t.dst_keycols, ranges)
  local conns = { self.src.c }
  for _, h in ipairs(self.src.helpers_active or {}) do conns[#conns + 1] = h end
  st.conns = math.max(st.conns, #conns)
  self.sink:reap()
  local sc = self.sink.c
  local ok, err, code = sc:send(sink_stmts[1])
  if not ok then errors.raise_sql(string.format("counting %s on %s failed: %s", t.dst_label, sc.label, tostring(err)), code) end
  local function take(into)
    return function(rows) for _, r in ipairs(rows) do into[tonumber(r[1])] = tonumber(r[2]) end end
  end
  local sok, serr = pcall(M.run_all, conns, diff.counts_sql(t.src_ref, t.keycols, ranges), "counting " .. t.src_label,
    take(src_n))
  local rows, rerr, rcode = sc:reap_query()
  if not sok then error(serr, 0) end
  if not rows then errors.raise_sql(string.format("counting %s on %s failed: %s", t.dst_label, sc.label, tostring(rerr)), rcode) end
  take(dst_n)(rows)
  for k = 2, #sink_stmts do take(dst_n)(q(sc, sink_stmts[k], "counting " .. t.dst_label)) end
  st.summary_bytes = st.summary_bytes + 16 * 2 * #ranges
  st.t_sums = st.t_sums + (util.mono() - t0)
  return src_n, dst_n
end

-- Key-driven iteration: the keys that may have changed come from `key_sql`
-- (streamed from the source); each slice of them is fetched from both sides
-- and merged. `more(out, apply, tick)`, when given, then adds changes of its own.
-- The state keeps its chunks; its vlo moves to this iteration's. More than
-- updateColumnMaxKeys keys: nil (nothing done; the caller compares chunk sums).
function Engine:iterate_keys(t, state, info, st, t0, key_sql, more)
  local sink = self.sink
  st.chunks = #state.chunks
  local c = self.src.c
  local cur, err, code, sqlstate = c:stream(key_sql .. " LIMIT " .. (self.max_keys + 1))
  if not cur then
    errors.raise_sql(string.format("reading the changes of %s from %s failed: %s", t.src_label, c.label, tostring(err)),
      code, sqlstate)
  end
  local kb = batchlib.new(t.keycols)
  while true do
    local n, ferr, fcode = cur:fetch(kb, 100000)
    if not n then cur:close() errors.raise_sql(string.format("reading the changes of %s failed: %s", t.src_label, tostring(ferr)), fcode) end
    if n == 0 then break end
  end
  cur:close()
  if kb:count() > self.max_keys then
    log.info("%s: more than %d rows changed since the last iteration (updateColumnMaxKeys): comparing chunk sums",
      t.src_label, self.max_keys)
    kb:free()
    st.versioned, st.updated = nil, nil
    return nil
  end
  st.keys = kb:count()
  if st.versioned then st.changed = kb:count() end
  st.rows_fetched = st.rows_fetched + kb:count()
  st.bytes_fetched = st.bytes_fetched + kb:bytes()
  local out = batchlib.new(t.out_columns)
  local in_txn = false
  local key = t.dst_key_idx or t.key_idx
  local function apply()
    local ta = util.mono()
    if out:count() > 0 then
      if not in_txn then sink:begin() in_txn = true end
      sink:apply_batch(out, t, "replace")
      out:clear()
    end
    st.t_apply = st.t_apply + (util.mono() - ta)
  end
  local function flush(final)
    apply()
    local ta = util.mono()
    if final then
      if not in_txn then sink:begin() in_txn = true end
      self:write_state(t, { sig = t.diff_sig, checked = state.checked, chunks = state.chunks, vlo = self.version_lo,
        keyed = true }, info)
    end
    if in_txn then
      self:commit(t, st, final)
      in_txn = false
    end
    st.t_apply = st.t_apply + (util.mono() - ta)
  end
  local function tick() if out:count() >= self.batch_rows then flush(false) end end
  local ok, perr = pcall(function()
    local per = 2000
    for first = 1, kb:count(), per do
      local stop = util.stop_requested() or (self.hooks.should_stop and self.hooks.should_stop())
      if stop then errors.raise("interrupted; the next iteration continues from the last commit", 130) end
      local tm = util.mono()
      local keys = {}
      for i = first, math.min(first + per - 1, kb:count()) do
        local _, _, k = kb:get(i)
        keys[#keys + 1] = k
      end
      local function get(side)
        local cc, ref, cols, kc
        if side == "src" then cc, ref, cols, kc = c, t.src_ref, t.columns, t.keycols
        else cc, ref, cols, kc = sink.c, t.dst_ref, t.out_columns, t.dst_keycols end
        if side == "sink" then sink:reap() end
        local cu, e2, c2 = cc:stream(diff.keys_sql(ref, cols, kc, keys))
        if not cu then errors.raise(string.format("reading %s from %s failed: %s", t.src_label, cc.label, tostring(e2)), c2) end
        local b = batchlib.new(cols)
        while true do
          local n, e3, c3 = cu:fetch(b, 100000)
          if not n then cu:close() errors.raise(string.format("reading %s failed: %s", t.src_label, tostring(e3)), c3) end
          if n == 0 then break end
        end
        cu:close()
        st.rows_fetched = st.rows_fetched + b:count()
        st.bytes_fetched = st.bytes_fetched + b:bytes()
        return b
      end
      local new = get("src")
      local old = get("sink")
      if self.fn then new = self:transform(t, new) end
      local i, u, d = rowdiff.rows(old, new, key, out)
      st.inserts, st.updates, st.deletes = st.inserts + i, st.updates + u, st.deletes + d
      old:free()
      new:free()
      st.t_merge = st.t_merge + (util.mono() - tm)
      tick()
    end
    if more then more(out, apply, tick) end
    flush(true)
  end)
  kb:free()
  out:free()
  if not ok then
    if in_txn then sink:rollback() end
    error(perr, 0)
  end
  st.seconds = util.mono() - t0
  return st
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
  local runner = require("mocdc.pipeline.job")
  local sink = runner.open_sink(job, ctx.name)
  opened.sink = sink
  if not sink.apply_batch or not sink.c then errors.raise(need_sql_sink, 2) end
  local dir
  opened.store, dir = runner.open_store(job, ctx.name)
  runner.claim(sink, dir, ctx)
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

-- run(job, ctx, run_opts): full copy of tables not copied yet, then one diff
-- iteration every `duration` seconds (run_opts.once: until the sink is in
-- sync once). Returns the summary of the last iteration.
function M.run(job, ctx, run_opts)
  run_opts = run_opts or {}
  local snapshot = require("mocdc.source.mysql")
  local so = job.stream.source.opts
  local interval = M.interval(job) or 0
  local src = snapshot.open(so)
  local opened = {}
  local ok, res = pcall(function()
    local sink, store, list, eng = M.setup(job, ctx, src, opened,
      "snapshot diffing needs a mysql:// sink: it reads the sink's rows as the previous state")
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
        local same, now = same_columns(src.c, t)
        if not same and #now == 0 and not schema.table_exists(src.c, t.src_db, t.src_table) then
          errors.raise(string.format("source table %s no longer exists (dropped or renamed) since the pipeline " ..
            "started; take it out of the selection, or re-create it, and restart the pipeline", t.src_label), 2)
        end
        if not same then
          errors.raise(string.format("source table %s changed its columns since the pipeline started; restart " ..
            "the pipeline (the sink table must be altered to match first)", t.src_label), 2)
        end
        local wm = sink:read_watermark(t.src_label, t.dst_label)
        if not wm or wm.phase == "full" then
          local fresh = wm == nil
          local cctx = copy.context(src, sink, store, job.stream.transforms, so, { position = info, final_phase = "diff" })
          local n, el = copy.copy_table(cctx, t)
          log.info("copied %s -> %s: %s rows in %.2f s", t.src_label, t.dst_label, progress.fmt_int(n), el)
          if fresh then
            -- same snapshot as the copy: the list describes exactly what the sink holds
            eng:store_baseline(t, info)
          else
            eng:delete_state(t)
          end
          summary[#summary + 1] = { src = t.src_label, dst = t.dst_label, rows = n, seconds = el, full = true }
        else
          local st = eng:iterate(t, info)
          local n = st.inserts + st.updates + st.deletes
          if st.gated or n == 0 then
            log.debug("diff %s -> %s: %s in %.3f s", t.src_label, t.dst_label, describe(st), st.seconds)
          else
            log.info("diff %s -> %s: %s in %.2f s", t.src_label, t.dst_label, describe(st), st.seconds)
          end
          log.debug("diff %s: %s", t.src_label, M.timings(st))
          summary[#summary + 1] = { src = t.src_label, dst = t.dst_label, rows = n, seconds = st.seconds,
            skipped = n == 0, stats = st }
        end
        store:set("table/" .. t.src_label, cjson.encode({ phase = "diff", iteration = iteration }))
      end
      src:end_snapshot()
      if ctx.on_iteration then ctx.on_iteration(summary, iteration) end
      if run_opts.once or interval <= 0 and run_opts.iterations == nil then break end
      if run_opts.iterations and iteration >= run_opts.iterations then break end
      local wait = interval - (util.mono() - started)
      if wait > 0 and not util.sleep(wait) then
        errors.raise("interrupted between iterations; the next run continues from the last commit", 130)
      end
      if util.stop_requested() or (ctx.should_stop and ctx.should_stop()) then break end
    end
    return summary
  end)
  M.teardown(src, opened)
  if not ok then error(res, 0) end
  return res
end

return M
