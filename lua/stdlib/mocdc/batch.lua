-- mocdc.batch: rows of one table in native memory (host/batch.c, host/batch.h).
--
--   local batch = require("mocdc.batch")
--   local b = batch.new({ {name = "id", class = "num"}, {name = "v", class = "str"} })
--   b:add("insert", nil, {1, "a"})
--   b:add("update", {1, "a"}, {1, batch.NULL})
--   for i, op, before, after in batch.rows(b) do ... end
--
-- Values are MySQL text-protocol strings; SQL NULL is batch.NULL (a NULL
-- lightuserdata, equal to cjson.null) in arrays and a missing key in named
-- tables. Methods: add, add_named, get, get_named, count, counts (inserts,
-- updates, deletes), bytes, clear, columns, free, append. add/add_named take an optional 5th argument `ts` (event
-- time, seconds) that get/get_named return as 4th value.
local lib = require("mocdc.batch.lib")

local M = {}
for k, v in pairs(lib) do M[k] = v end

-- Iterate rows as arrays: for i, op, before, after, ts in batch.rows(b).
function M.rows(b)
  local i, n = 0, b:count()
  return function()
    i = i + 1
    if i > n then return nil end
    return i, b:get(i)
  end
end

-- Build a batch of inserts from an array of rows (tests and small tools).
function M.of(columns, rows)
  local b = lib.new(columns)
  for _, r in ipairs(rows or {}) do b:add("insert", nil, r) end
  return b
end

return M
