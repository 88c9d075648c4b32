-- The snapshot source: reads every selected table in primary-key order from
-- ONE consistent snapshot (START TRANSACTION WITH CONSISTENT SNAPSHOT), as a
-- streaming cursor (memory bounded whatever the table size).
local conn = require("mocdc.conn")
local errors = require("mocdc.errors")
local schema = require("mocdc.schema")
local tables = require("mocdc.tables")

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
  local c, err = conn.open(uri, { role = "source", password = o.password,
    read_timeout = o.readTimeout, connect_timeout = o.connectTimeout })
  if not c then errors.raise(err) end
  return setmetatable({ c = c, o = o, uri = uri }, Src)
end

function Src:label() return self.c.label end

-- Start the consistent snapshot; returns the binlog position it corresponds
-- to when the server can say so atomically (MariaDB), else nil.
function Src:begin_snapshot()
  local c = self.c
  local function ex(sql)
    local ok, err = c:exec(sql)
    if not ok then errors.raise(string.format("source %s: %s failed: %s", c.label, sql, err)) end
  end
  ex("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
  self.position = nil
  local lock = self.o.snapshotLock == true or self.o.snapshotLock == "true" or
    (c.flavour == "mysql" and self.o.needPosition)
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
  ex("START TRANSACTION WITH CONSISTENT SNAPSHOT")
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
end

-- Resolve the selection and read every table's metadata (validates up front).
function Src:tables()
  local list = tables.resolve(self.c, self.o, self.c.label)
  for _, t in ipairs(list) do
    t.src_label = t.src_db .. "." .. t.src_table
    local cols = schema.columns(self.c, t.src_db, t.src_table)
    local copy = {}
    for _, col in ipairs(cols) do if not col.generated then copy[#copy + 1] = col end end
    t.columns = copy
    t.key = schema.primary_key(self.c, t.src_db, t.src_table)
    if self.o.idCols and #t.key == 0 then
      t.key, t.key_from_idcols = {}, true
      for name in tostring(self.o.idCols):gmatch("[^,%s]+") do t.key[#t.key + 1] = name end
    end
    t.key_idx = {}
    for _, k in ipairs(t.key) do
      local found
      for i, col in ipairs(copy) do if col.name:lower() == k:lower() then found = i end end
      if not found then
        errors.raise(string.format("key column '%s' is not a column of %s (check idCols)", k, t.src_label))
      end
      t.key_idx[#t.key_idx + 1] = found
    end
    t.create_sql = schema.show_create(self.c, t.src_db, t.src_table)
    local est = self.c:query("SELECT table_rows FROM information_schema.tables WHERE table_schema = '" ..
      self.c:escape(t.src_db) .. "' AND table_name = '" .. self.c:escape(t.src_table) .. "'")
    t.estimated_rows = est and est[1] and tonumber(est[1][1]) or nil
  end
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
          local v = after_key[j]
          local lit
          if col.class == "num" then lit = tostring(v) elseif col.class == "bin" or col.class == "bit" then
            lit = "X'" .. (tostring(v):gsub(".", function(ch) return string.format("%02X", ch:byte()) end)) .. "'"
          else lit = "'" .. self.c:escape(v) .. "'" end
          ands[#ands + 1] = schema.qi(col.name) .. (j == i and " > " or " = ") .. lit
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
  local cur, err = self.c:stream(sql)
  if not cur then errors.raise(string.format("reading %s from source %s failed: %s", t.src_label, self.c.label, err)) end
  return cur
end

function Src:close()
  if self.c then self.c:close() end
end

return M
