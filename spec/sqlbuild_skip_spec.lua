-- sqlbuild's opts.skip (issue 9 defect 2): generated columns are never written
-- nor used to identify a keyless row. Exact SQL asserted.
local batch = require("mocdc.batch")
local sb = require("mocdc.sqlbuild")

local COLS = { { name = "id", class = "num" }, { name = "a", class = "num" }, { name = "s", class = "num" },
  { name = "v", class = "str" } }

local function mk(rows)
  local b = batch.new(COLS)
  for _, r in ipairs(rows) do b:add(r[1], r[2], r[3]) end
  return b
end

describe("sqlbuild.build with opts.skip", function()
  it("leaves skipped columns out of REPLACE, INSERT ... ON DUPLICATE KEY UPDATE and the key deletes", function()
    local b = mk({ { "insert", nil, { 1, 2, 4, "x" } }, { "update", { 2, 1, 2, "y" }, { 3, 1, 2, "y" } } })
    local stmts = sb.build(b, { table = "`t`", key = { 1 }, skip = { 3, 4 } })
    assert.same({ "DELETE FROM `t` WHERE `id` IN (2)", "REPLACE INTO `t` (`id`,`a`) VALUES (1,2),(3,1)" }, stmts)
    stmts = sb.build(b, { table = "`t`", key = { 1 }, skip = { 3 }, mode = "upsert" })
    assert.same({ "DELETE FROM `t` WHERE `id` IN (2)",
      "INSERT INTO `t` (`id`,`a`,`v`) VALUES (1,2,'x'),(3,1,'y') ON DUPLICATE KEY UPDATE `a`=VALUES(`a`),`v`=VALUES(`v`)" },
      stmts)
    b:free()
  end)

  it("identifies a keyless row by its written columns only", function()
    -- s differs between the two images of one row (a generated value the binlog carried): still one row
    local b = mk({ { "insert", nil, { 1, 2, 4, "x" } }, { "delete", { 1, 2, 99, "x" } }, { "delete", { 5, 6, 7, "z" } },
      { "insert", nil, { 8, 9, 10, "w" } } })
    local stmts = sb.build(b, { table = "`t`", key = {}, skip = { 3 } })
    assert.same({ "DELETE FROM `t` WHERE `id` <=> 5 AND `a` <=> 6 AND `v` <=> 'z' LIMIT 1",
      "INSERT INTO `t` (`id`,`a`,`v`) VALUES (8,9,'w')" }, stmts)
    b:free()
  end)

  it("names the row by its written columns when it is too long, and refuses bad skips", function()
    local b = mk({ { "insert", nil, { 1, 2, 4, ("x"):rep(100) } } })
    local stmts, err = sb.build(b, { table = "`t`", key = {}, skip = { 4 }, max_len = 10 })
    assert.is_nil(stmts)
    assert.equal("row (id=1, a=2, s=4) needs 45 bytes, more than max-sql-length 10", err)
    assert.has_error(function() sb.build(b, { table = "`t`", key = { 1 }, skip = { 1 } }) end,
      "bad argument #2 to 'build' (opts.skip holds a key column)")
    assert.has_error(function() sb.build(b, { table = "`t`", skip = { 5 } }) end,
      "bad argument #2 to 'build' (opts.skip[1] is not a column index (1..4))")
    assert.has_error(function() sb.build(b, { table = "`t`", skip = { 1, 2, 3, 4 } }) end,
      "bad argument #2 to 'build' (opts.skip leaves no column to write)")
    b:free()
  end)
end)
