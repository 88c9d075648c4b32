-- mocdc.sqlbuild: batch -> sink SQL (host/sqlbuild.c has the strategy in its
-- header comment: per-key collapse, deletes before upserts, no-key multiset
-- reduction, max_len splitting).
--
--   local sqlbuild = require("mocdc.sqlbuild")
--   local stmts, stats = sqlbuild.build(b, {
--     table = sqlbuild.quote_table("db", "t"), key = {1}, mode = "replace",
--     dialect = "mysql", max_len = 4194304 })
--   -- stmts: array of SQL strings (run in order, in one transaction)
--   -- stats: {deletes = n, upserts = m} rows written after collapsing
--   -- or nil, "row with key (id=5) needs N bytes, more than max-sql-length M"
--
-- quote_ident(name) -> `na``me`; quote_value(class, bytes|nil) -> SQL literal
-- (class num|str|bin|bit; nil or batch NULL -> NULL).
local lib = require("mocdc.sqlbuild.lib")

local M = {}
for k, v in pairs(lib) do M[k] = v end

-- `db`.`t` (or just `t` when db is nil).
function M.quote_table(db, t)
  if db == nil then return lib.quote_ident(t) end
  return lib.quote_ident(db) .. "." .. lib.quote_ident(t)
end

-- 1-based key column indexes for the named key columns of a batch.
function M.key_indexes(b, names)
  local pos = {}
  for i, c in ipairs(b:columns()) do pos[c.name] = i end
  local key = {}
  for i, n in ipairs(names) do
    key[i] = pos[n] or error(("key column '%s' is not in the batch"):format(n), 2)
  end
  return key
end

return M
