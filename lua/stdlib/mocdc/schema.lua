-- Table metadata over a MySQL-protocol connection: columns, keys, DDL, and
-- the comparison that refuses a sink table whose columns differ.
local errors = require("mocdc.errors")
local sqlbuild = require("mocdc.sqlbuild")
local M = {}

M.SYSTEM_DBS = {
  mysql = true, information_schema = true, performance_schema = true, sys = true,
  mocdc = true, mo_catalog = true, system = true, system_metrics = true, mo_task = true,
  mo_debug = true,
}

local NUM = { tinyint = 1, smallint = 1, mediumint = 1, int = 1, integer = 1, bigint = 1,
  decimal = 1, numeric = 1, float = 1, double = 1, real = 1, year = 1 }
local BIN = { binary = 1, varbinary = 1, tinyblob = 1, blob = 1, mediumblob = 1, longblob = 1,
  geometry = 1, point = 1, linestring = 1, polygon = 1, multipoint = 1, multilinestring = 1,
  multipolygon = 1, geometrycollection = 1 }

-- Column class used by the batch / SQL builder: num | str | bin | bit.
function M.class_of(data_type)
  data_type = data_type:lower()
  if NUM[data_type] then return "num" end
  if data_type == "bit" then return "bit" end
  if BIN[data_type] then return "bin" end
  return "str"
end

-- The one quoting rule (host/sqlbuild.c's): `na``me`.
function M.qi(name) return sqlbuild.quote_ident(tostring(name)) end
function M.qname(db, t) return M.qi(db) .. "." .. M.qi(t) end

-- Its inverse: the identifier at the start of s (after spaces), `quoted` (``
-- is one backtick) or bare. Returns name, rest of s; nil when there is none.
function M.read_ident(s)
  s = s:gsub("^%s+", "")
  if s:sub(1, 1) ~= "`" then
    local name = s:match("^[%w_$\128-\255]+")
    if not name then return nil end
    return name, s:sub(#name + 1)
  end
  local parts, i = {}, 2
  while true do
    local j = s:find("`", i, true)
    if not j then return nil end
    parts[#parts + 1] = s:sub(i, j - 1)
    if s:sub(j + 1, j + 1) ~= "`" then return table.concat(parts, "`"), s:sub(j + 1) end
    i = j + 2
  end
end

-- db.table or table (db = default_db) at the start of s: db, table, rest | nil.
function M.read_qname(s, default_db)
  local a, rest = M.read_ident(s)
  if not a then return nil end
  local after_dot = rest:match("^%s*%.(.*)$")
  if after_dot then
    local b, rest2 = M.read_ident(after_dot)
    if b then return a, b, rest2 end
  end
  return default_db, a, rest
end

local function q(c, sql)
  local rows, err, code = c:query(sql)
  if not rows then errors.raise(string.format("query failed on %s: %s", c.label or "server", err)) end
  return rows
end

local function lit(c, s) return "'" .. c:escape(s) .. "'" end

-- Normalise a column type for comparison: integer display widths are cosmetic.
function M.normalize_type(t)
  t = t:lower():gsub("^(%a*int)%(%d+%)", "%1"):gsub("%s+zerofill", "")
  t = t:gsub("^bool$", "tinyint(1)")
  return t
end

-- Base tables of a server, excluding system schemas: array of {db, table}.
function M.list_tables(c)
  local rows = q(c, "SELECT table_schema, table_name FROM information_schema.tables " ..
    "WHERE table_type IN ('BASE TABLE', 'SYSTEM VERSIONED') ORDER BY table_schema, table_name")
  local out = {}
  for _, r in ipairs(rows) do
    if not M.SYSTEM_DBS[r[1]] then out[#out + 1] = { db = r[1], table = r[2] } end
  end
  return out
end

function M.table_exists(c, db, t)
  local rows = q(c, "SELECT 1 FROM information_schema.tables WHERE table_schema = " .. lit(c, db) ..
    " AND table_name = " .. lit(c, t))
  return #rows > 0
end

function M.database_exists(c, db)
  local rows = q(c, "SELECT 1 FROM information_schema.schemata WHERE schema_name = " .. lit(c, db))
  return #rows > 0
end

-- Columns in ordinal order. Generated columns (STORED or VIRTUAL) carry
-- generated = true, kind ("STORED" | "VIRTUAL") and expression (as the server
-- shows it, backticks and spacing dropped); they are never written.
function M.columns(c, db, t)
  local rows = q(c, "SELECT column_name, data_type, column_type, is_nullable, extra, column_key, column_default " ..
    "FROM information_schema.columns WHERE table_schema = " .. lit(c, db) ..
    " AND table_name = " .. lit(c, t) .. " ORDER BY ordinal_position")
  local cols, any_generated = {}, false
  for _, r in ipairs(rows) do
    local extra = (type(r[5]) == "string" and r[5] or ""):lower()
    local generated = extra:find("generated", 1, true) ~= nil
    cols[#cols + 1] = {
      name = r[1], data_type = r[2]:lower(), column_type = r[3], nullable = r[4] == "YES",
      class = M.class_of(r[2]), generated = generated, extra = extra,
      default = type(r[7]) == "string" and r[7] or nil,
    }
    if generated then
      cols[#cols].kind = extra:find("virtual", 1, true) and "VIRTUAL" or "STORED"
      any_generated = true
    end
  end
  if any_generated then
    -- a server without generation_expression (MatrixOne) keeps expression nil
    local ex = c:query("SELECT column_name, generation_expression FROM information_schema.columns " ..
      "WHERE table_schema = " .. lit(c, db) .. " AND table_name = " .. lit(c, t))
    local by = {}
    for _, r in ipairs(type(ex) == "table" and ex or {}) do by[r[1]] = r[2] end
    for _, col in ipairs(cols) do
      local e = col.generated and by[col.name]
      if type(e) == "string" then col.expression = e:gsub("`", ""):gsub("%s+", " ") end
    end
  end
  return cols
end

-- Split columns into those written (copy) and the generated ones (with a
-- lowercase name set), as a table record keeps them: columns, generated, generated_set.
function M.split_generated(cols)
  local copy, gen, set = {}, {}, nil
  for _, col in ipairs(cols) do
    if col.generated then
      gen[#gen + 1] = col
      set = set or {}
      set[col.name:lower()] = true
    else
      copy[#copy + 1] = col
    end
  end
  return copy, gen, set
end

-- Primary key column names in key order; falls back to the first unique key
-- whose columns are all NOT NULL (same choice as InnoDB's clustered index).
function M.primary_key(c, db, t)
  local rows = q(c, "SELECT s.index_name, s.column_name, s.non_unique, c.is_nullable " ..
    "FROM information_schema.statistics s JOIN information_schema.columns c " ..
    "ON c.table_schema = s.table_schema AND c.table_name = s.table_name AND c.column_name = s.column_name " ..
    "WHERE s.table_schema = " .. lit(c, db) .. " AND s.table_name = " .. lit(c, t) ..
    " ORDER BY s.index_name = 'PRIMARY' DESC, s.index_name, s.seq_in_index")
  local idx, order = {}, {}
  for _, r in ipairs(rows) do
    local name = r[1]
    if not idx[name] then idx[name] = { cols = {}, unique = tostring(r[3]) == "0", nullable = false }; order[#order + 1] = name end
    local e = idx[name]
    e.cols[#e.cols + 1] = r[2]
    if r[4] == "YES" then e.nullable = true end
  end
  if idx.PRIMARY then return idx.PRIMARY.cols, "PRIMARY" end
  for _, name in ipairs(order) do
    local e = idx[name]
    if e.unique and not e.nullable then return e.cols, name end
  end
  return {}, nil
end

function M.show_create(c, db, t)
  local rows = q(c, "SHOW CREATE TABLE " .. M.qname(db, t))
  return rows[1][2]
end

-- DDL for the sink: the source's CREATE TABLE renamed to the target, IF NOT
-- EXISTS, foreign keys stripped (the sink table is a copy, not a peer).
function M.sink_ddl(create_sql, dst_db, dst_table, dialect)
  local rest = create_sql:match("^CREATE TABLE%s+(.*)$")
  local _, _, after = M.read_qname(rest or "", nil)
  if not after then errors.raise("cannot read the table name of: " .. create_sql:sub(1, 120)) end
  local body = "CREATE TABLE IF NOT EXISTS " .. M.qname(dst_db, dst_table) .. after
  local lines = {}
  for line in (body .. "\n"):gmatch("(.-)\n") do
    if not line:find("FOREIGN KEY", 1, true) then lines[#lines + 1] = line end
  end
  -- a dropped last FK line leaves a trailing comma before ")"
  for i = #lines, 2, -1 do
    if lines[i]:match("^%)") then
      lines[i - 1] = lines[i - 1]:gsub(",%s*$", "")
      break
    end
  end
  local out = table.concat(lines, "\n")
  if dialect == "matrixone" then
    -- MatrixOne ignores/rejects MySQL storage options; keep the column list only
    out = out:gsub("%)%s*ENGINE=.*$", ")")
  end
  return out
end

-- Compare the columns a pipeline writes with the sink table's columns; with
-- src_generated (the source's generated columns), the sink's generated columns
-- must be the same (name, type, STORED / VIRTUAL, expression). A written column
-- must never be generated in the sink (it would refuse the value).
-- Returns nil when compatible, otherwise a message naming the first difference.
function M.compare(src_label, src_cols, dst_label, dst_cols, names_only, src_generated)
  local function gdesc(c) return "(" .. c.kind .. (c.expression and (", " .. c.expression) or "") .. ")" end
  local dst_by = {}
  for _, c in ipairs(dst_cols) do dst_by[c.name:lower()] = c end
  local src_by = {}
  for _, c in ipairs(src_cols) do
    src_by[c.name:lower()] = c
    local d = dst_by[c.name:lower()]
    if not d then
      return string.format("column '%s' of %s is missing in sink table %s", c.name, src_label, dst_label)
    end
    if d.generated then
      return string.format("column '%s' is generated %s in sink table %s but not in %s", d.name, gdesc(d),
        dst_label, src_label)
    end
    if not names_only and c.column_type and d.column_type and
        M.normalize_type(c.column_type) ~= M.normalize_type(d.column_type) then
      return string.format("column '%s' is %s in %s but %s in sink table %s", c.name,
        c.column_type, src_label, d.column_type, dst_label)
    end
  end
  if src_generated and not names_only then
    for _, g in ipairs(src_generated) do
      src_by[g.name:lower()] = g
      local d = dst_by[g.name:lower()]
      if not d then
        return string.format("column '%s' of %s is missing in sink table %s", g.name, src_label, dst_label)
      end
      if not d.generated then
        return string.format("column '%s' of %s is generated %s but not in sink table %s", g.name, src_label,
          gdesc(g), dst_label)
      end
      if g.kind ~= d.kind or (g.expression and d.expression and g.expression:lower() ~= d.expression:lower()) then
        return string.format("column '%s' is generated as %s in %s but as %s in sink table %s", g.name, gdesc(g),
          src_label, gdesc(d), dst_label)
      end
      if M.normalize_type(g.column_type) ~= M.normalize_type(d.column_type) then
        return string.format("column '%s' is %s in %s but %s in sink table %s", g.name,
          g.column_type, src_label, d.column_type, dst_label)
      end
    end
    for _, d in ipairs(dst_cols) do
      if d.generated and not src_by[d.name:lower()] then
        return string.format("column '%s' is generated %s in sink table %s but not in %s", d.name, gdesc(d),
          dst_label, src_label)
      end
    end
  end
  for _, d in ipairs(dst_cols) do
    if not src_by[d.name:lower()] and not d.nullable and not d.generated then
      return string.format("sink table %s has column '%s' (NOT NULL) that %s does not have",
        dst_label, d.name, src_label)
    end
  end
  return nil
end

return M
