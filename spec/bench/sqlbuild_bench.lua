-- Statement-building rate of mocdc.sqlbuild (not a spec: run explicitly).
--   mocdc busted spec/bench/sqlbuild_bench.lua
-- 5-column table (BIGINT, VARCHAR, DECIMAL, DATETIME, TINYINT); prints rows/s.
local batch = require("mocdc.batch")
local sb = require("mocdc.sqlbuild")

local function clock() return os.clock() end

local cols = { { name = "id", class = "num" }, { name = "name", class = "str" }, { name = "amount", class = "num" },
  { name = "created", class = "str" }, { name = "flag", class = "num" } }

local function fill(n, kind)
  local b = batch.new(cols)
  for i = 1, n do
    local row = { tostring(i), "customer-" .. i .. "'s", tostring(i * 7 % 100000) .. ".25",
      "2024-01-15 14:30:00.123456", tostring(i % 2) }
    if kind == "insert" then
      b:add("insert", nil, row)
    else
      local before = { row[1], row[2], "0.00", row[4], "0" }
      if i % 10 == 0 then b:add("delete", before, nil) else b:add("update", before, row) end
    end
  end
  return b
end

describe("sqlbuild benchmark", function()
  for _, case in ipairs({ { "insert", "replace" }, { "insert", "upsert" }, { "mixed", "replace" } }) do
    it(case[1] .. " rows, " .. case[2] .. " mode", function()
      local n = 200000
      local b = fill(n, case[1])
      local opts = { table = "`db`.`orders`", key = { 1 }, mode = case[2] }
      sb.build(b, opts) -- warm the scratch buffers
      local reps, bytes = 10, 0
      local t0 = clock()
      for _ = 1, reps do
        local s = sb.build(b, opts)
        for _, x in ipairs(s) do bytes = bytes + #x end
      end
      local dt = clock() - t0
      io.stderr:write(string.format("\n%s/%s: %.2f M rows/s, %.0f MB/s of SQL\n", case[1], case[2],
        n * reps / dt / 1e6, bytes / dt / 1e6))
    end)
  end
end)
