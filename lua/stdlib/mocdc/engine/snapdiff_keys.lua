-- The snapshot-diff engine's key-driven modes: MariaDB system-versioned tables
-- (their history) and tables with an updateColumn give the keys changed since
-- the last iteration's change bound (version_lo), so only those rows are
-- fetched and merged; the chunk sums of engine/snapdiff_ranges.lua remain the
-- full check. The Engine methods are installed by engine/snapdiff.lua.
local diff = require("mocdc.engine.snapdiff_sql")
local errors = require("mocdc.errors")
local log = require("mocdc.log")
local rowdiff = require("mocdc.rowdiff")
local schema = require("mocdc.schema")
local sranges = require("mocdc.engine.snapdiff_ranges")
local state_mod = require("mocdc.engine.snapdiff_state")
local util = require("mocdc.util.lib")

local q, run_all = sranges.q, sranges.run_all

local M = {}
local Engine = {}
M.methods = Engine

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
  local sok, serr = pcall(run_all, conns, diff.counts_sql(t.src_ref, t.keycols, ranges), "counting " .. t.src_label,
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

-- The keys that may have changed (`key_sql`, streamed from the source) in a
-- batch, or nil (freed, logged) when there are more than updateColumnMaxKeys.
function Engine:changed_keys(t, key_sql, st)
  local kb = sranges.drain(self.src.c, key_sql .. " LIMIT " .. (self.max_keys + 1), t.keycols,
    "reading the changes of " .. t.src_label)
  if kb:count() > self.max_keys then
    log.info("%s: more than %d rows changed since the last iteration (updateColumnMaxKeys): comparing chunk sums",
      t.src_label, self.max_keys)
    kb:free()
    return nil
  end
  st.keys = kb:count()
  st.rows_fetched = st.rows_fetched + kb:count()
  st.bytes_fetched = st.bytes_fetched + kb:bytes()
  return kb
end

-- Key-driven iteration: the keys that may have changed come from `key_sql`;
-- each slice of them is fetched from both sides and merged. `more(out, apply,
-- tick)`, when given, then adds changes of its own. The state keeps its
-- chunks; its vlo moves to this iteration's. More than updateColumnMaxKeys
-- keys: nil (nothing done; the caller compares chunk sums).
function Engine:iterate_keys(t, state, info, st, t0, key_sql, more)
  st.chunks = #state.chunks
  local kb = self:changed_keys(t, key_sql, st)
  if not kb then
    st.versioned, st.updated = nil, nil
    return nil
  end
  if st.versioned then st.changed = kb:count() end
  local txn = state_mod.txn(self, t, st, info)
  local key = t.dst_key_idx or t.key_idx
  local function state_of(final)
    if final then
      return { sig = t.diff_sig, checked = state.checked, chunks = state.chunks, vlo = self.version_lo, keyed = true }
    end
  end
  local function tick() if txn.out:count() >= self.batch_rows then txn:flush(false, state_of) end end
  txn:run(function()
    local per = 2000
    for first = 1, kb:count(), per do
      txn:check_stop()
      local tm = util.mono()
      local keys = {}
      for i = first, math.min(first + per - 1, kb:count()) do
        local _, _, k = kb:get(i)
        keys[#keys + 1] = k
      end
      local new = self:read("src", t, st, diff.keys_sql, keys)
      local old = self:read("sink", t, st, diff.keys_sql, keys)
      if self.fn then new = self:transform(t, new) end
      local i, u, d = rowdiff.rows(old, new, key, txn.out)
      st.inserts, st.updates, st.deletes = st.inserts + i, st.updates + u, st.deletes + d
      old:free()
      new:free()
      st.t_merge = st.t_merge + (util.mono() - tm)
      tick()
    end
    if more then more(txn.out, function() txn:apply() end, tick) end
    txn:flush(true, state_of)
  end, kb)
  st.seconds = util.mono() - t0
  return st
end

return M
