-- Table selection: which source tables a pipeline syncs and where each goes.
-- Accepts the mo_cdc forms (`tables = "db.t:db2.t2,db3.t3"`, `databases = "db1:db2"`,
-- level account|database|table, `exclude` regex) and the MLSQL ones
-- (`databaseNamePattern` / `tableNamePattern` regexes matching whole names,
-- a target with {db}/{table} placeholders).
local errors = require("mocdc.errors")
local regex = require("mocdc.regex")
local schema = require("mocdc.schema")
local record = require("mocdc.pipeline.table")
local M = {}

local function split(s, sep)
  local out = {}
  for part in (s .. sep):gmatch("(.-)" .. sep) do
    part = part:match("^%s*(.-)%s*$")
    if part ~= "" then out[#out + 1] = part end
  end
  return out
end

local function compile(opt, pattern)
  local re, err = regex.compile(pattern)
  if not re then errors.raise(string.format("%s: %s", opt, err), 2) end
  return re
end

local function fill(pattern, db, t)
  return (pattern:gsub("{db}", function() return db end):gsub("{table}", function() return t end))
end

-- Parse "db.t:db2.t2,db3.t3" into rules {src_db, src_table, dst_db, dst_table}
-- ("*" matches any name; a missing target keeps the source name).
function M.parse_tables(spec)
  local rules = {}
  for _, entry in ipairs(split(spec, ",")) do
    local src, dst = entry:match("^([^:]+):(.+)$")
    src = src or entry
    local sdb, st = src:match("^([^.]+)%.(.+)$")
    if not sdb then
      errors.raise(string.format("tables: '%s' is not db.table (expected \"db.t:db2.t2,...\")", entry), 2)
    end
    local ddb, dt = sdb, st
    if dst then
      ddb, dt = dst:match("^([^.]+)%.(.+)$")
      if not ddb then
        errors.raise(string.format("tables: target '%s' is not db.table (expected \"db.t:db2.t2,...\")", dst), 2)
      end
    end
    rules[#rules + 1] = { src_db = sdb, src_table = st, dst_db = ddb, dst_table = dt, entry = entry }
  end
  return rules
end

-- Parse "db1:db2,db3" into database rules.
function M.parse_databases(spec)
  local rules = {}
  for _, entry in ipairs(split(spec, ",")) do
    local s, d = entry:match("^([^:]+):(.+)$")
    rules[#rules + 1] = { src_db = s or entry, dst_db = d or s or entry, entry = entry }
  end
  return rules
end

-- Validate the regex options up front (bad regex = one clear error).
function M.compile_filters(o)
  return {
    db = o.databaseNamePattern and compile("databaseNamePattern", o.databaseNamePattern),
    table = o.tableNamePattern and compile("tableNamePattern", o.tableNamePattern),
    exclude = o.exclude and compile("exclude", o.exclude),
  }
end

-- resolve(conn, opts, source_label) -> array of {src_db, src_table, dst_db, dst_table}
function M.resolve(c, o, label)
  -- mo_cdc's level: account = every table, database needs databases, table needs tables
  if o.level ~= nil then
    if o.level ~= "account" and o.level ~= "database" and o.level ~= "table" then
      errors.raise(string.format("level '%s' must be account, database or table", tostring(o.level)), 2)
    end
    if o.level == "table" and not o.tables then errors.raise("level = \"table\" needs tables = \"db.t:db2.t2,...\"", 2) end
    if o.level == "database" and not o.databases and not o.tables then
      errors.raise("level = \"database\" needs databases = \"db1:db2\"", 2)
    end
  end
  local f = M.compile_filters(o)
  local all = schema.list_tables(c)
  local out, seen = {}, {}
  local function add(sdb, st, ddb, dt)
    local key = sdb .. "." .. st
    if seen[key] then return end
    if f.exclude and f.exclude:find(key) then return end
    seen[key] = true
    out[#out + 1] = record.new({ src_db = sdb, src_table = st, dst_db = ddb, dst_table = dt })
  end
  local target = o.target
  local function dst_of(db, t, ddb, dt)
    if target then
      local tdb, tt = fill(target, db, t):match("^([^.]+)%.(.+)$")
      if not tdb then errors.raise(string.format("target '%s' is not db.table", target), 2) end
      return tdb, tt
    end
    return ddb or db, dt or t
  end
  if o.tables and o.tables ~= "" and o.tables ~= "*" and o.tables ~= "*.*" and o.tables ~= "*:*" then
    for _, r in ipairs(M.parse_tables(o.tables)) do
      local matched = false
      for _, t in ipairs(all) do
        if (r.src_db == "*" or r.src_db == t.db) and (r.src_table == "*" or r.src_table == t.table) then
          matched = true
          local ddb = r.dst_db == "*" and t.db or r.dst_db
          local dt = r.dst_table == "*" and t.table or r.dst_table
          add(t.db, t.table, dst_of(t.db, t.table, ddb, dt))
        end
      end
      if not matched then
        errors.raise(string.format("source table %s.%s does not exist on %s (check tables = \"%s\")",
          r.src_db, r.src_table, label or "the source", o.tables), 2)
      end
    end
  elseif o.databases and o.databases ~= "" then
    for _, r in ipairs(M.parse_databases(o.databases)) do
      if not schema.database_exists(c, r.src_db) then
        errors.raise(string.format("source database %s does not exist on %s (check databases = \"%s\")",
          r.src_db, label or "the source", o.databases), 2)
      end
      for _, t in ipairs(all) do
        if t.db == r.src_db and (not f.table or f.table:full_match(t.table)) then
          add(t.db, t.table, dst_of(t.db, t.table, r.dst_db, t.table))
        end
      end
    end
  else
    for _, t in ipairs(all) do
      if (not f.db or f.db:full_match(t.db)) and (not f.table or f.table:full_match(t.table)) then
        add(t.db, t.table, dst_of(t.db, t.table))
      end
    end
  end
  if #out == 0 then
    errors.raise(string.format("no source table on %s matches the selection%s", label or "the source",
      o.databaseNamePattern and (" (databaseNamePattern=" .. o.databaseNamePattern ..
        ", tableNamePattern=" .. tostring(o.tableNamePattern) .. ")") or ""), 2)
  end
  return out
end

return M
