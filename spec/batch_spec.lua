-- mocdc.batch: native row container (host/batch.c).
local batch = require("mocdc.batch")
local NULL = batch.NULL

local cols = {
  { name = "id", class = "num" },
  { name = "name", class = "str" },
  { name = "blob", class = "bin" },
  { name = "flags", class = "bit" },
}

describe("mocdc.batch", function()
  it("exposes NULL as a NULL lightuserdata equal to cjson.null", function()
    assert.equal("userdata", type(NULL))
    assert.equal(require("cjson").null, NULL)
  end)

  it("round-trips inserts, updates and deletes with NULLs and binary bytes", function()
    local b = batch.new(cols)
    assert.equal(0, b:count())
    b:add("insert", nil, { "1", "a\0b", "\0\1\255", "\5" })
    b:add("update", { "1", "a\0b", NULL, "\5" }, { "1", NULL, "", "\0" })
    b:add("delete", { "2", "x", nil, "\1" }, nil)
    assert.equal(3, b:count())

    local op, before, after = b:get(1)
    assert.equal("insert", op)
    assert.is_nil(before)
    assert.same({ "1", "a\0b", "\0\1\255", "\5" }, after)

    op, before, after = b:get(2)
    assert.equal("update", op)
    assert.same({ "1", "a\0b", NULL, "\5" }, before)
    assert.same({ "1", NULL, "", "\0" }, after)
    assert.equal(NULL, after[2])
    assert.equal("", after[3]) -- empty string is not NULL

    op, before, after = b:get(3)
    assert.equal("delete", op)
    assert.same({ "2", "x", NULL, "\1" }, before)
    assert.is_nil(after)
  end)

  it("adds and gets by column name (nil = NULL)", function()
    local b = batch.new(cols)
    b:add_named("insert", nil, { id = "7", name = "n", flags = "\1" })
    local op, before, after = b:get_named(1)
    assert.equal("insert", op)
    assert.is_nil(before)
    assert.same({ id = "7", name = "n", flags = "\1" }, after)
    local _, _, arr = b:get(1)
    assert.same({ "7", "n", NULL, "\1" }, arr)
  end)

  it("formats Lua numbers exactly", function()
    local b = batch.new({ { name = "a", class = "num" }, { name = "b", class = "num" },
      { name = "c", class = "num" }, { name = "d", class = "num" } })
    b:add("insert", nil, { 42, -9007199254740992, 0.1, 1e300 })
    local _, _, after = b:get(1)
    assert.same({ "42", "-9007199254740992", "0.10000000000000001", "1.0000000000000001e+300" }, after)
  end)

  it("keeps the event timestamp", function()
    local b = batch.new(cols)
    b:add("insert", nil, { "1" }, 1700000000)
    local _, _, _, ts = b:get(1)
    assert.equal(1700000000, ts)
  end)

  it("reports columns", function()
    local b = batch.new({ { name = "id", class = "num" }, { name = "v" } })
    assert.same({ { name = "id", class = "num" }, { name = "v", class = "str" } }, b:columns())
  end)

  it("clear keeps capacity and empties the batch", function()
    local b = batch.new(cols)
    for i = 1, 1000 do b:add("insert", nil, { tostring(i), ("x"):rep(100), NULL, "\1" }) end
    local full = b:bytes()
    assert.is_true(full >= 1000 * 102)
    b:clear()
    assert.equal(0, b:count())
    assert.equal(0, b:bytes())
    b:add("insert", nil, { "1", "y", NULL, NULL })
    assert.equal(1, b:count())
    local _, _, after = b:get(1)
    assert.same({ "1", "y", NULL, NULL }, after)
  end)

  it("survives many rows (arena growth keeps earlier values intact)", function()
    local b = batch.new(cols)
    local n = 20000
    for i = 1, n do b:add("insert", nil, { tostring(i), ("v"):rep(i % 50), NULL, string.char(i % 256) }) end
    assert.equal(n, b:count())
    for _, i in ipairs({ 1, 2, 777, 4096, n }) do
      local _, _, after = b:get(i)
      assert.same({ tostring(i), ("v"):rep(i % 50), NULL, string.char(i % 256) }, after)
    end
  end)

  it("handles wide tables (more than 128 columns)", function()
    local wide, row = {}, {}
    for i = 1, 300 do
      wide[i] = { name = "c" .. i, class = "num" }
      row[i] = i % 7 == 0 and NULL or tostring(i)
    end
    local b = batch.new(wide)
    b:add("update", row, row)
    local op, before, after = b:get(1)
    assert.equal("update", op)
    assert.same(row, before)
    assert.same(row, after)
    local _, _, named = b:get_named(1)
    assert.equal("300", named.c300)
    assert.is_nil(named.c7)
  end)

  it("rows() iterates", function()
    local b = batch.of(cols, { { "1" }, { "2" } })
    local seen = {}
    for i, op, _, after in batch.rows(b) do seen[#seen + 1] = i .. op .. after[1] end
    assert.same({ "1insert1", "2insert2" }, seen)
  end)

  it("free is explicit and idempotent; use after free raises", function()
    local b = batch.new(cols)
    b:add("insert", nil, { "1" })
    b:free()
    b:free()
    assert.equal("mocdc.batch (freed)", tostring(b))
    assert.has_error(function() b:count() end, "attempt to use a freed batch")
    collectgarbage()
  end)

  it("raises on programming errors", function()
    assert.has_error(function() batch.new("x") end,
      "bad argument #1 to 'new' (table expected, got string)")
    assert.has_error(function() batch.new({ { name = "a", class = "blob" } }) end,
      "bad argument #1 to 'new' (column 1: class must be num, str, bin or bit)")
    assert.has_error(function() batch.new({ { class = "num" } }) end,
      "bad argument #1 to 'new' (column 1 has no name)")
    local b = batch.new(cols)
    assert.has_error(function() b:add("upsert", nil, {}) end,
      "bad argument #1 to 'add' (invalid option 'upsert')")
    assert.has_error(function() b:add("insert", nil, nil) end,
      "bad argument #3 to 'add' (insert and update need an after image)")
    assert.has_error(function() b:add("delete", nil, nil) end,
      "bad argument #2 to 'add' (update and delete need a before image)")
    assert.has_error(function() b:add("insert", nil, { {} }) end,
      "column 'id' holds a table")
    assert.has_error(function() b:get(1) end,
      "bad argument #1 to 'get' (row index out of range)")
    assert.equal(0, b:count())
  end)
end)

describe("batch:append", function()
  it("copies rows (ops, images, NULLs, bytes) from another batch, optionally a range", function()
    local lib = require("mocdc.batch.lib")
    local cols = { { name = "id", class = "num" }, { name = "b", class = "bin" } }
    local a, b = lib.new(cols), lib.new(cols)
    a:add("insert", nil, { "1", "\0x" })
    a:add("update", { "1", "\0x" }, { "1", lib.NULL })
    a:add("delete", { "2", "y" }, nil)
    assert.equals(3, b:append(a))
    for i = 1, 3 do assert.same({ a:get(i) }, { b:get(i) }) end
    local c = lib.new(cols)
    assert.equals(1, c:append(a, 2, 2))
    assert.same({ a:get(2) }, { c:get(1) })
    assert.has_error(function() b:append(b) end)
    assert.has_error(function() b:append(lib.new({ { name = "x" } })) end)
  end)
end)
