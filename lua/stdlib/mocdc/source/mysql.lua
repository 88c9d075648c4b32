-- The snapshot source: reads every selected table in primary-key order from
-- ONE consistent snapshot (START TRANSACTION WITH CONSISTENT SNAPSHOT), as a
-- streaming cursor (memory bounded whatever the table size).
local conn = require("mocdc.conn")
local errors = require("mocdc.errors")
local log = require("mocdc.log")
local schema = require("mocdc.schema")
local sqlbuild = require("mocdc.sqlbuild.lib")
local tables = require("mocdc.pipeline.tables")
local util = require("mocdc.util.lib")

local M = {}
local Src = {}
Src.__index = Src

-- Connection URI from the source options: `uri`, or the MLSQL style
-- host/port/userName/password.
function M.source_uri(o)
  if o.uri then return o.uri end
  if o.host then
    return string.format("mysql://%s@%s:%s", o.userName or o.user or "root", o.host, o.port or 3306)
  end
  errors.raise("source: give uri = \"mysql://user:password@host:port\" or host/port/userName/password")
end

function M.open(o)
  local uri = M.source_uri(o)
  local c, err, errno, sqlstate = conn.open(uri, { role = "source", password = o.password,
    read_timeout = o.readTimeout, connect_timeout = o.connectTimeout })
  if not c then errors.open_failed(err, errno, nil, sqlstate) end
  return setmetatable({ c = c, o = o, uri = uri }, Src)
end

function Src:label() return self.c.label end

local function start_snapshot(c)
  for _, sql in ipairs({ "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
      "START TRANSACTION WITH CONSISTENT SNAPSHOT" }) do
    local ok, err, code, state = c:exec(sql)
    if not ok then return nil, err, code, state end
  end
  return true
end

-- The locker connection and n helper connections, opened once and kept; why they cannot be (or nil).
function Src:open_helpers(n)
  self.helper_conns = self.helper_conns or {}
  local function open()
    local c, err = conn.open(self.uri, { role = "source", password = self.o.password,
      read_timeout = self.o.readTimeout, connect_timeout = self.o.connectTimeout })
    return c, err
  end
  if self.locker and not self.locker:ping() then
    self.locker:close() -- dropped by the server (wait_timeout below) between iterations
    self.locker = nil
  end
  if not self.locker then
    local c, err = open()
    if not c then return err end
    -- wait_timeout: if mocdc stalls while holding the lock (stopped, cut
    -- off), the server drops this connection, and the lock with it, in 5 s
    local ok, e2 = c:exec("SET SESSION lock_wait_timeout = 1, wait_timeout = 5")
    if not ok then
      c:close()
      return e2
    end
    self.locker = c
  end
  while #self.helper_conns < n do
    local c, err = open()
    if not c then return err end
    self.helper_conns[#self.helper_conns + 1] = c
  end
end

-- LOCK TABLES ... READ on the locker, so every connection's snapshot starts at the same point;
-- why it cannot be taken (or nil).
function Src:lock_for_helpers(list, n)
  local mariadb = self.c.flavour == "mariadb"
  local names = {}
  for i, t in ipairs(list) do names[i] = schema.qname(t.src_db, t.src_table) .. " READ" end
  local sql = "LOCK TABLES " .. table.concat(names, ", ") .. (mariadb and " NOWAIT" or "")
  local ok, err, code
  for attempt = 1, mariadb and 3 or 1 do
    ok, err, code = self.locker:exec(sql)
    if ok or (code ~= 1205 and code ~= 1213) then break end
    if attempt < 3 then util.sleep(0.02) end
  end
  if ok then return nil end
  self.locker:close() -- reopened next time (it may be the connection that failed)
  self.locker = nil
  if code == 1044 or code == 1142 or code == 1227 then
    return "LOCK TABLES ... READ is not allowed (" .. tostring(err) .. "); to checksum on " .. (n + 1) ..
      " connections grant the source user LOCK TABLES on these tables (or set checksumParallel = 1)"
  elseif code == 1205 or code == 1213 then
    return "a write transaction is open on one of the tables, so their snapshots could differ (LOCK TABLES ... " ..
      "READ: " .. tostring(err) .. ")"
  end
  return "LOCK TABLES ... READ failed: " .. tostring(err)
end

-- Helper connections reading the SAME snapshot as self.c (parallel chunk
-- checksums, mocdc.engine.snapdiff). MariaDB and MySQL cannot share a snapshot
-- between connections, so every one starts its own while a third
-- connection holds `LOCK TABLES ... READ` on the tables of the iteration: no
-- write can commit to them in between, so all the snapshots see the same
-- rows of those tables. The lock is held for the few round trips the START
-- TRANSACTIONs take (writers wait that long), and the server drops it if
-- mocdc stalls meanwhile (wait_timeout 5 s). It is never waited for (MariaDB:
-- NOWAIT, tried 3 times 20 ms apart; MySQL: lock_wait_timeout = 1), so a long
-- write transaction never makes the source's writers queue behind it: when it cannot be had (a write
-- transaction open on a table, no LOCK TABLES privilege) this iteration runs
-- on self.c alone, and the log says why (once until it changes). Returns the
-- helpers that are in the snapshot (possibly none) and whether self.c's
-- snapshot was started.
function Src:start_helpers(n, list)
  self.helpers_active = {}
  if n <= 0 or #list == 0 or self.c.flavour == "matrixone" then return self.helpers_active end
  local why = self:open_helpers(n)
  if not why then why = self:lock_for_helpers(list, n) end
  if why then
    if self.helper_note ~= why then
      log.info("source %s: chunk checksums on one connection this iteration: %s", self.c.label, tostring(why))
      self.helper_note = why
    end
    return self.helpers_active, false
  end
  local started, err, code, state = start_snapshot(self.c)
  if started and self.between_snapshots then self.between_snapshots() end -- test seam (specs only)
  if started then
    local keep = {}
    for _, h in ipairs(self.helper_conns) do
      if start_snapshot(h) then
        self.helpers_active[#self.helpers_active + 1] = h
        keep[#keep + 1] = h
      else
        h:close() -- reopened next time
      end
    end
    self.helper_conns = keep
  end
  if not self.locker:exec("UNLOCK TABLES") then
    self.locker:close() -- closing a connection releases its table locks
    self.locker = nil
  end
  if not started then
    errors.raise_sql(string.format("source %s: starting the snapshot failed: %s", self.c.label, err), code, state)
  end
  self.helper_note = nil
  return self.helpers_active, true
end

-- Start the consistent snapshot; returns the binlog position it corresponds
-- to when the server can say so atomically (MariaDB), else nil.
-- opts.helpers = n, opts.tables = list: also put n helper connections in the
-- same snapshot (Src:start_helpers; self.helpers_active lists them).
function Src:begin_snapshot(opts)
  local c = self.c
  local function ex(sql)
    local ok, err, code, state = c:exec(sql)
    if not ok then errors.raise_sql(string.format("source %s: %s failed: %s", c.label, sql, err), code, state) end
  end
  self.helpers_active = {}
  self.position = nil
  local lock = self.o.snapshotLock == true or self.o.snapshotLock == "true" or
    (c.flavour == "mysql" and self.o.needPosition)
  local started = false
  if opts and (opts.helpers or 0) > 0 and not lock then
    started = select(2, self:start_helpers(opts.helpers, opts.tables or {}))
  end
  if not started then ex("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ") end
  if lock then
    -- MySQL has no binlog_snapshot_file: hold a global read lock only for the
    -- instant between starting the snapshot and reading the binlog position
    ex("FLUSH TABLES WITH READ LOCK")
    local ok, err = pcall(function()
      ex("START TRANSACTION WITH CONSISTENT SNAPSHOT")
      self.position = require("mocdc.binlog").master_status(c)
    end)
    c:exec("UNLOCK TABLES")
    if not ok then error(err, 0) end
    return self.position
  end
  if not started then ex("START TRANSACTION WITH CONSISTENT SNAPSHOT") end
  if c.flavour == "mariadb" then
    local rows = c:query("SHOW STATUS LIKE 'binlog_snapshot_%'")
    if rows then
      local st = {}
      for _, r in ipairs(rows) do st[r[1]:lower()] = r[2] end
      if st.binlog_snapshot_file and st.binlog_snapshot_file ~= "" then
        self.position = { file = st.binlog_snapshot_file, pos = tonumber(st.binlog_snapshot_position) }
      end
    end
  end
  return self.position
end

function Src:end_snapshot()
  self.c:exec("COMMIT")
  for _, h in ipairs(self.helpers_active or {}) do h:exec("COMMIT") end
  self.helpers_active = {}
end

-- Fill a table record's description from the server: written columns (generated ones apart), the
-- key (primary key, else the id_cols list "a,b"), SHOW CREATE TABLE and the row estimate.
function M.describe(c, t, id_cols)
  t.src_label = t.src_db .. "." .. t.src_table
  t.columns, t.generated, t.generated_set = schema.split_generated(schema.columns(c, t.src_db, t.src_table))
  t.key = schema.primary_key(c, t.src_db, t.src_table)
  if id_cols and #t.key == 0 then
    t.key, t.key_from_idcols = {}, true
    for name in tostring(id_cols):gmatch("[^,%s]+") do t.key[#t.key + 1] = name end
  end
  t.key_idx = {}
  for _, k in ipairs(t.key) do
    local found
    for i, col in ipairs(t.columns) do if col.name:lower() == k:lower() then found = i end end
    if not found then
      errors.raise(string.format("key column '%s' is not a column of %s (check idCols)", k, t.src_label), 2)
    end
    t.key_idx[#t.key_idx + 1] = found
  end
  t.create_sql = schema.show_create(c, t.src_db, t.src_table)
  local est = c:query("SELECT table_rows FROM information_schema.tables WHERE table_schema = '" ..
    c:escape(t.src_db) .. "' AND table_name = '" .. c:escape(t.src_table) .. "'")
  t.estimated_rows = est and est[1] and tonumber(est[1][1]) or nil
  return t
end

-- Resolve the selection and read every table's metadata (validates up front).
function Src:tables()
  local list = tables.resolve(self.c, self.o, self.c.label)
  for _, t in ipairs(list) do M.describe(self.c, t, self.o.idCols) end
  return list
end

-- SELECT of a table in key order, starting after `after_key` (array of values).
function Src:select_sql(t, after_key)
  local cols = {}
  for i, col in ipairs(t.columns) do
    -- FLOAT's text form keeps 6 digits; its DOUBLE rendering round-trips exactly
    if col.data_type == "float" then cols[i] = "CAST(" .. schema.qi(col.name) .. " AS DOUBLE) AS " .. schema.qi(col.name)
    else cols[i] = schema.qi(col.name) end
  end
  local sql = "SELECT " .. table.concat(cols, ", ") .. " FROM " .. schema.qname(t.src_db, t.src_table)
  if #t.key_idx > 0 then
    if after_key then
      -- (k1 > v1) OR (k1 = v1 AND k2 > v2) ...: index-friendly row comparison
      local ors = {}
      for i = 1, #t.key_idx do
        local ands = {}
        for j = 1, i do
          local col = t.columns[t.key_idx[j]]
          ands[#ands + 1] = schema.qi(col.name) .. (j == i and " > " or " = ") ..
            sqlbuild.quote_value(col.class, after_key[j])
        end
        ors[#ors + 1] = "(" .. table.concat(ands, " AND ") .. ")"
      end
      sql = sql .. " WHERE " .. table.concat(ors, " OR ")
    end
    local order = {}
    for _, i in ipairs(t.key_idx) do order[#order + 1] = schema.qi(t.columns[i].name) end
    sql = sql .. " ORDER BY " .. table.concat(order, ", ")
  end
  return sql
end

function Src:cursor(t, after_key)
  local sql = self:select_sql(t, after_key)
  local cur, err, code, state = self.c:stream(sql)
  if not cur then
    errors.raise_sql(string.format("reading %s from source %s failed: %s", t.src_label, self.c.label, err), code, state)
  end
  return cur
end

function Src:close()
  if self.c then self.c:close() end
  for _, h in ipairs(self.helper_conns or {}) do h:close() end
  if self.locker then self.locker:close() end
  self.helper_conns, self.locker, self.helpers_active = nil, nil, {}
end

return M
