-- The MatrixOne source, load.matrixone{...}: MatrixOne has no change log a
-- client can read over SQL, so every iteration
--   1. CREATE SNAPSHOT mocdc_<pipeline>_<n> FOR DATABASE db (one database) or
--      FOR ACCOUNT acc (tables in several databases); its timestamp from
--      mo_catalog.mo_snapshots;
--   2. per table: a table never copied is copied from the snapshot
--      (SELECT ... FROM db.t{SNAPSHOT = 's'} in key order, chunked, resumable);
--      otherwise its changes since the snapshot its watermark names are read with
--      DATA BRANCH DIFF db.t{SNAPSHOT = 'new'} AGAINST db.t{SNAPSHOT = 'old'}
--      and applied, the watermark (snapshot name + ts) in the same sink
--      transaction;
--   3. snapshots no table needs any more are dropped.
-- Without DATA BRANCH DIFF (older servers), for keyless tables, when the old
-- snapshot is gone (dropped, or outside PITR/GC: then the final state is
-- synced, as seed 002 says) and every `verifyInterval` seconds, the table is
-- diffed by chunk checksums instead (mocdc.engine.snapdiff), reading the old state
-- from the old snapshot when it exists, else from the sink.
-- MatrixOne's own CDC refuses to start without a PITR covering the tables; so
-- does this source (pitr = false skips the check).
--
-- M.sql holds every statement this module sends (pinned by spec/matrixone_sql_spec.lua).
local batchlib = require("mocdc.batch")
local copy = require("mocdc.engine.copy")
local diffsrc = require("mocdc.engine.snapdiff")
local errors = require("mocdc.errors")
local log = require("mocdc.log")
local job_mod = require("mocdc.pipeline.job")
local options = require("mocdc.pipeline.options")
local progress = require("mocdc.progress")
local schema = require("mocdc.schema")
local util = require("mocdc.util.lib")

local M = {}
local qi, qname = schema.qi, schema.qname

-- A diff chunk stops at batchSize rows or at this many bytes.
local MAX_CHUNK_BYTES = 16 * 1024 * 1024

---------------------------------------------------------------------------
-- statements
---------------------------------------------------------------------------
local sql = {}
M.sql = sql

local function lit(s) return "'" .. tostring(s):gsub("\\", "\\\\"):gsub("'", "\\'") .. "'" end
sql.lit = lit

-- Snapshot names: mocdc_<pipeline>_<counter>, [a-z0-9_] only.
function sql.snapshot_prefix(pipeline)
  local p = tostring(pipeline):lower():gsub("[^%w]", "_"):sub(1, 40)
  return "mocdc_" .. p .. "_"
end

-- scope: {level = "table", db =, table =} | {level = "database", db =} | {level = "account", account =}
function sql.create_snapshot(name, scope)
  if scope.level == "table" then
    return "CREATE SNAPSHOT " .. name .. " FOR TABLE " .. qi(scope.db) .. " " .. qi(scope.table)
  elseif scope.level == "database" then
    return "CREATE SNAPSHOT " .. name .. " FOR DATABASE " .. qi(scope.db)
  end
  return "CREATE SNAPSHOT " .. name .. " FOR ACCOUNT " .. qi(scope.account or "sys")
end

function sql.snapshot_ts(name)
  return "SELECT ts FROM mo_catalog.mo_snapshots WHERE sname = " .. lit(name)
end

function sql.list_snapshots(prefix)
  return "SELECT sname FROM mo_catalog.mo_snapshots WHERE sname LIKE " ..
    lit(prefix:gsub("_", "\\_") .. "%") .. " ORDER BY sname"
end

function sql.drop_snapshot(name)
  return "DROP SNAPSHOT IF EXISTS " .. name
end

function sql.table_ref(db, t, snap)
  return qname(db, t) .. "{SNAPSHOT = " .. lit(snap) .. "}"
end

function sql.branch_diff(db, t, new_snap, old_snap)
  return "DATA BRANCH DIFF " .. sql.table_ref(db, t, new_snap) .. " AGAINST " .. sql.table_ref(db, t, old_snap)
end

sql.show_pitr = "SHOW PITR"

-- The statement the PITR error suggests.
function sql.create_pitr(db, hours)
  return "CREATE PITR mocdc_pitr FOR DATABASE " .. qi(db) .. " RANGE " .. hours .. " 'h'"
end

-- SELECT of a table at a snapshot, in key order after `after_key`: the
-- snapshot source's statement with the snapshot clause on the table.
function sql.select_at(base_sql, db, t, snap)
  local ref = qname(db, t)
  local pat = " FROM " .. ref:gsub("[%%%-%^%$%(%)%.%[%]%*%+%?]", "%%%0")
  local out, n = base_sql:gsub(pat, function() return " FROM " .. sql.table_ref(db, t, snap) end, 1)
  assert(n == 1, "select_at: table reference not found")
  return out
end

---------------------------------------------------------------------------
-- PITR check
---------------------------------------------------------------------------
local UNIT_HOURS = { h = 1, d = 24, mo = 24 * 30, y = 24 * 365 }

-- rows: SHOW PITR rows {name, created, modified, level, account, db, table, length, unit}.
-- Returns nil when every table is covered for >= min_hours, else a message.
function M.pitr_gap(rows, tables, account, min_hours, label)
  for _, t in ipairs(tables) do
    local ok = false
    for _, r in ipairs(rows) do
      local level, acc, db, tbl = tostring(r[4]):lower(), r[5], r[6], r[7]
      local hours = (tonumber(r[8]) or 0) * (UNIT_HOURS[tostring(r[9]):lower()] or 0)
      local covers = level == "cluster"
        or (level == "account" and (acc == "*" or acc == account or account == nil))
        or (level == "database" and db == t.src_db)
        or (level == "table" and db == t.src_db and tbl == t.src_table)
      if covers and hours >= min_hours then ok = true break end
    end
    if not ok then
      return string.format("MatrixOne source %s has no PITR of at least %d h covering %s.%s: snapshot diffs " ..
        "need the history kept (MatrixOne's own CDC requires the same); create one, e.g. %s, or set pitr = false",
        label or "", min_hours, t.src_db, t.src_table, sql.create_pitr(t.src_db, min_hours))
    end
  end
  return nil
end

---------------------------------------------------------------------------
-- the source object
---------------------------------------------------------------------------
local Mo = {}
Mo.__index = function(self, k)
  local v = Mo[k]
  if v ~= nil then return v end
  local base = rawget(self, "base")
  local f = base and base[k]
  if type(f) == "function" then return function(_, ...) return f(base, ...) end end
  return f
end

-- wrap(c, o): a MatrixOne source over an open connection (tests pass a fake).
function M.wrap(c, o, base)
  local u = require("mocdc.uri").parse(o.uri or "mysql://root@127.0.0.1:6001")
  return setmetatable({ c = c, o = o or {}, base = base, account = o.account or (u and u.account) or "sys",
    snap = nil, stats = { statements = {} } }, Mo)
end

function M.open(o)
  local snapshot = require("mocdc.source.mysql")
  local base = snapshot.open(o)
  return M.wrap(base.c, o, base)
end

function Mo:run(s, what)
  local n, err, code = self.c:exec(s)
  if not n then errors.raise_sql(string.format("source %s: %s failed: %s", self.c.label or "", what or s, tostring(err)), code) end
  return n
end

function Mo:rows(s, what)
  local rows, err, code = self.c:query(s)
  if not rows then errors.raise_sql(string.format("source %s: %s failed: %s", self.c.label or "", what or s, tostring(err)), code) end
  return rows
end

function Mo:check_pitr(tables)
  local min = tonumber(self.o.minPitrHours) or 2
  local rows = self:rows(sql.show_pitr, "SHOW PITR")
  local gap = M.pitr_gap(rows, tables, self.account, min, self.c.label)
  if gap then errors.raise(gap, 2) end
end

-- Snapshot scope for a set of tables.
function Mo:scope(tables)
  local level = self.o.snapshotLevel
  local dbs, ndb, one = {}, 0, nil
  for _, t in ipairs(tables) do
    if not dbs[t.src_db] then dbs[t.src_db] = true ndb = ndb + 1 one = t.src_db end
  end
  if ndb ~= 1 then one = nil end
  if level == "table" and #tables == 1 then
    return { level = "table", db = tables[1].src_db, table = tables[1].src_table }
  end
  if (level == nil or level == "database") and one then return { level = "database", db = one } end
  return { level = "account", account = self.account }
end

-- Create a snapshot; returns its ts (ns since the epoch, as text).
function Mo:create_snapshot(name, scope)
  self:run(sql.create_snapshot(name, scope), "CREATE SNAPSHOT " .. name)
  local rows = self:rows(sql.snapshot_ts(name), "reading the timestamp of snapshot " .. name)
  if not rows[1] then errors.raise("snapshot " .. name .. " was created but mo_catalog.mo_snapshots does not list it") end
  return tostring(rows[1][1])
end

function Mo:snapshot_exists(name)
  if not name then return false end
  local rows = self:rows(sql.snapshot_ts(name), "looking up snapshot " .. name)
  return rows[1] ~= nil
end

function Mo:drop_snapshot(name)
  local n, err = self.c:exec(sql.drop_snapshot(name))
  if not n then log.warn("could not drop snapshot %s on %s: %s", name, self.c.label or "", tostring(err)) end
end

function Mo:list_snapshots(prefix)
  local out = {}
  for _, r in ipairs(self:rows(sql.list_snapshots(prefix), "listing snapshots")) do out[#out + 1] = r[1] end
  return out
end

function Mo:table_ref(t)
  return sql.table_ref(t.src_db, t.src_table, assert(self.snap, "no current snapshot"))
end

-- The full copy reads at the current snapshot.
function Mo:cursor(t, after_key)
  local base_sql = self.base:select_sql(t, after_key)
  local s = sql.select_at(base_sql, t.src_db, t.src_table, self.snap)
  local cur, err, code = self.c:stream(s)
  if not cur then
    errors.raise_sql(string.format("reading %s at snapshot %s from %s failed: %s", t.src_label, self.snap,
      self.c.label or "", tostring(err)), code)
  end
  return cur
end

-- Errors meaning "this server has no DATA BRANCH DIFF".
function M.unsupported(err, code)
  if code == 1064 or code == 1149 or code == 1235 then return true end
  local m = tostring(err):lower()
  return m:find("syntax", 1, true) ~= nil or m:find("not supported", 1, true) ~= nil
end

-- The changes of t between two snapshots, read with a streaming cursor:
-- reader:fetch(b, max_rows) appends up to max_rows of them to b (a batch of
-- t.columns) -> n (0 at the end); the projection (the columns by name, the op
-- from the flag column) is done in C (host/conn.c), no row becomes a Lua
-- value. reader:close(). nil, err, code when the statement fails.
-- Result columns: [diff <t> against <t>, flag, <visible columns, lower-cased>].
function Mo:diff_reader(t, new_snap, old_snap)
  local s = sql.branch_diff(t.src_db, t.src_table, new_snap, old_snap)
  local cur, cols, code = self.c:stream(s)
  if not cur then return nil, cols, code end
  local pos = {}
  for i = 3, #cols do pos[cols[i].name:lower()] = i end
  local map = {}
  for j, c in ipairs(t.columns) do
    map[j] = pos[c.name:lower()]
    if not map[j] then
      cur:close()
      errors.raise(string.format("DATA BRANCH DIFF of %s has no column %s", t.src_label, c.name))
    end
  end
  local proj, label, stats = { cols = map, flag = 2 }, self.c.label, self.stats
  local what = string.format("DATA BRANCH DIFF of %s (snapshots %s..%s) on %s", t.src_label, old_snap, new_snap, label)
  return {
    fetch = function(_, b, max_rows)
      local n, err, ecode, sqlstate = cur:fetch(b, max_rows, MAX_CHUNK_BYTES, proj)
      if not n then errors.raise_sql(string.format("%s failed: %s", what, tostring(err)), ecode, sqlstate) end
      stats.rows_fetched = (stats.rows_fetched or 0) + n
      stats.bytes_fetched = (stats.bytes_fetched or 0) + b:bytes()
      return n
    end,
    close = function() cur:close() end,
  }
end

-- Through the transforms (copy.transform_row): an insert or update they keep
-- is written (REPLACE by key), a delete they keep deletes by key; an update
-- they drop deletes its key too (the old image, which the diff does not carry,
-- may be in the sink); an insert or delete they drop was never in the sink.
local function transform_changes(fn, t, raw, out)
  for i = 1, raw:count() do
    local res, op = copy.transform_row(fn, t, raw, i)
    if res ~= nil or op == "update" then
      local _, b0, a0 = raw:get_named(i)
      local orig = a0 or b0
      if res ~= nil and op ~= "delete" then
        copy.add_transformed(out, "insert", nil, res, t, op, orig)
      else
        local key = res
        if key == nil then
          key = {}
          for j, ki in ipairs(t.key_idx) do key[t.out_columns[t.dst_key_idx[j]].name] = orig[t.columns[ki].name] end
        end
        copy.add_transformed(out, "delete", key, nil, t, op, orig)
      end
    end
  end
end

-- Apply the changes of t from snapshot prev to snap: batchSize rows at a time
-- (MAX_CHUNK_BYTES at most) read into one native batch, through the
-- transforms when there are any, written, and the watermark `info` in the
-- same sink transaction, so the iteration is applied whole or not at all.
-- Returns the stats, or nil, err, code when the statement fails.
function Mo:apply_diff(t, sink, fn, snap, prev, info, batch_rows)
  local r, err, code = self:diff_reader(t, snap, prev)
  if not r then return nil, err, code end
  local t0 = util.mono()
  local st = diffsrc.new_stats(t)
  local raw = batchlib.new(t.columns)
  local out = fn and batchlib.new(t.out_columns) or raw
  local ok, e = pcall(function()
    sink:begin()
    while true do
      if util.stop_requested() then errors.raise("interrupted; the next run continues from the last snapshot", 130) end
      raw:clear()
      if out ~= raw then out:clear() end
      if r:fetch(raw, batch_rows) == 0 then break end
      local i, u, d = raw:counts()
      st.inserts, st.updates, st.deletes = st.inserts + i, st.updates + u, st.deletes + d
      if fn then transform_changes(fn, t, raw, out) end
      if out:count() > 0 then sink:apply_batch(out, t, "replace") end
    end
    sink:set_watermark(t.src_label, t.dst_label, "mo", nil, info)
    sink:commit()
    st.commits = 1
  end)
  r:close()
  raw:free()
  if out ~= raw then out:free() end
  if not ok then
    sink:rollback()
    error(e, 0)
  end
  st.seconds = util.mono() - t0
  return st
end

M.Mo = Mo

---------------------------------------------------------------------------
-- the pipeline runner
---------------------------------------------------------------------------

local function position(wm)
  return wm and type(wm.position) == "table" and wm.position or {}
end

function M.run(job, ctx, run_opts)
  run_opts = run_opts or {}
  local so = job.stream.source.opts
  local interval = diffsrc.interval(job) or 0
  local src = M.open(so)
  local opened = {}
  local ok, res = pcall(function()
    local sink, store, list, eng = diffsrc.setup(job, ctx, src, opened,
      "the MatrixOne source needs a mysql:// or matrixone:// sink", function(list)
        if so.pitr ~= false and so.pitr ~= "false" then src:check_pitr(list) end
        src.snap = "mocdc_unset"
      end)
    local prefix = sql.snapshot_prefix(ctx.name)
    local mode = so.diff or "branch" -- "branch" | "chunks"
    local verify = tonumber(so.verifyInterval) or 3600
    local no_full = options.truthy(so.noFull)
    local fn = eng.fn -- the compiled transforms, or nil
    local batch_rows = eng.batch_rows
    local counter = math.floor(util.now() * 1000)
    local iteration, summary = 0, nil
    while true do
      iteration = iteration + 1
      local started = util.mono()
      counter = math.max(counter + 1, math.floor(util.now() * 1000))
      local snap = prefix .. counter
      local ts = src:create_snapshot(snap, src:scope(list))
      src.snap = snap
      summary = {}
      local keep = { [snap] = true }
      for _, t in ipairs(list) do
        local wm = sink:read_watermark(t.src_label, t.dst_label)
        local prev = position(wm).snapshot
        -- verified: when the table was last compared as a whole (copy or chunk checksums)
        local info = { snapshot = snap, ts = ts, iteration = iteration, verified = position(wm).verified or 0 }
        t.src_ref = src:table_ref(t)
        if not wm and no_full then
          -- noFull: the user loaded the table; its changes are read from this snapshot on
          info.verified = util.now()
          sink:begin()
          sink:set_watermark(t.src_label, t.dst_label, "mo", nil, info)
          sink:commit()
          log.info("no full copy of %s -> %s: changes from snapshot %s on", t.src_label, t.dst_label, snap)
          summary[#summary + 1] = { src = t.src_label, dst = t.dst_label, rows = 0, seconds = 0, skipped = true }
        elseif not wm or wm.phase == "full" then
          local cctx = copy.context(src, sink, store, job.stream.transforms, so, { position = info, final_phase = "mo" })
          local n, el = copy.copy_table(cctx, t)
          log.info("copied %s -> %s at snapshot %s: %s rows in %.2f s", t.src_label, t.dst_label, snap,
            progress.fmt_int(n), el)
          if wm then
            -- resumed across snapshots: compare the whole table next time
            eng:delete_state(t)
            info.verified = 0
          else
            info.verified = util.now()
          end
          sink:begin()
          sink:set_watermark(t.src_label, t.dst_label, "mo", nil, info)
          sink:commit()
          summary[#summary + 1] = { src = t.src_label, dst = t.dst_label, rows = n, seconds = el, full = true }
        else
          local use_branch = mode == "branch" and not t.no_branch and #t.keycols > 0
          local prev_ok = src:snapshot_exists(prev)
          if use_branch and (not prev_ok or util.now() - info.verified >= verify) then use_branch = false end
          local st
          if use_branch then
            local err, code
            st, err, code = src:apply_diff(t, sink, fn, snap, prev, info, batch_rows)
            if not st and M.unsupported(err, code) then
              log.warn("source %s has no DATA BRANCH DIFF (%s): diffing %s by chunk checksums", src.c.label,
                tostring(err), t.src_label)
              t.no_branch = true
            elseif not st then
              errors.raise_sql(string.format("DATA BRANCH DIFF of %s (snapshots %s..%s) on %s failed: %s", t.src_label,
                prev, snap, src.c.label, tostring(err)), code)
            end
          end
          if not st then
            -- chunk checksums: old state from the previous snapshot, else the sink
            t.old_ref = prev_ok and sql.table_ref(t.src_db, t.src_table, prev) or nil
            if not prev_ok then
              log.info("%s: snapshot %s is gone; comparing snapshot %s with the sink (the final state is synced)",
                t.src_label, tostring(prev), snap)
            end
            info.verified = util.now()
            st = eng:iterate(t, info)
            t.old_ref = nil
          end
          local n = st.inserts + st.updates + st.deletes
          if n > 0 then
            log.info("%s -> %s: snapshot %s: %d inserts, %d updates, %d deletes in %.2f s", t.src_label, t.dst_label,
              snap, st.inserts, st.updates, st.deletes, st.seconds)
          end
          summary[#summary + 1] = { src = t.src_label, dst = t.dst_label, rows = n, seconds = st.seconds,
            skipped = n == 0, stats = st }
        end
      end
      -- drop our snapshots no watermark needs any more
      for _, t in ipairs(list) do
        local p = position(sink:read_watermark(t.src_label, t.dst_label)).snapshot
        if p then keep[p] = true end
      end
      for _, name in ipairs(src:list_snapshots(prefix)) do
        if not keep[name] then src:drop_snapshot(name) end
      end
      if not job_mod.next_iteration(ctx, run_opts, summary, iteration, interval, started, "the last snapshot") then
        break
      end
    end
    return summary
  end)
  diffsrc.teardown(src, opened)
  if not ok then error(res, 0) end
  return res
end

return M
