-- Issue 10 item 4: cursor:fetch(batch, max_rows, max_bytes, {cols =, flag =})
-- projects change rows in C (host/conn.c, mocdc_batch_add_projected): the
-- batch columns picked from the cursor's by index, the op from a flag column
-- (INSERT / UPDATE / DELETE in any case, as MatrixOne's DATA BRANCH DIFF
-- reports them). Against a real server: the rows come from a SELECT shaped
-- like the diff's result ([diff t against t, flag, <columns>]).
local conn = require("mocdc.conn")
local batch = require("mocdc.batch.lib")
local mdb = require("spec.helpers.mariadb")

local NULL = batch.NULL

local function row(b, i)
  local op, before, after = b:get(i)
  return { op, before, after }
end

mdb.describe("cursor projection of change rows (issue 10 item 4)", function()
  local srv, c
  setup(function()
    srv = mdb.start({ name = "proj" })
    c = assert(conn.open(srv.uri))
  end)
  teardown(function() if c then c:close() end end)

  local DIFF = "SELECT 't' AS `diff t against t`, 'INSERT' AS flag, 1 AS id, 'a' AS v, NULL AS n " ..
    "UNION ALL SELECT 't', 'update', 2, 'b', 20 UNION ALL SELECT 't', 'Delete', 3, NULL, 30 " ..
    "UNION ALL SELECT 't', 'UPDATE', 4, 'd', NULL"
  local cols = { { name = "n", class = "num" }, { name = "id", class = "num" }, { name = "v", class = "str" } }

  it("turns each row into an insert, update (one image, before = after) or delete of the chosen columns", function()
    local cur = assert(c:stream(DIFF))
    local b = batch.new(cols)
    assert.are.equal(4, cur:fetch(b, 100, nil, { cols = { 5, 3, 4 }, flag = 2 }))
    assert.are.equal(0, cur:fetch(b, 100, nil, { cols = { 5, 3, 4 }, flag = 2 }))
    assert.is_true(cur:done())
    assert.are.same({ "insert", nil, { NULL, "1", "a" } }, row(b, 1))
    assert.are.same({ "update", { "20", "2", "b" }, { "20", "2", "b" } }, row(b, 2))
    assert.are.same({ "delete", { "30", "3", NULL } }, row(b, 3))
    assert.are.same({ "update", { NULL, "4", "d" }, { NULL, "4", "d" } }, row(b, 4))
    assert.are.same({ 1, 2, 1 }, { b:counts() })
    assert.are.same({ { "1" } }, c:query("SELECT 1")) -- read to the end: the conn is usable again
    b:free()
  end)

  it("stops at max_rows and at max_bytes, and goes on where it stopped", function()
    local cur = assert(c:stream(DIFF))
    local b = batch.new(cols)
    local proj = { cols = { 5, 3, 4 }, flag = 2 }
    assert.are.equal(1, cur:fetch(b, 100, 1, proj)) -- the first row already holds 1 byte
    assert.are.equal(2, cur:fetch(b, 2, nil, proj))
    b:clear()
    assert.are.equal(1, cur:fetch(b, 2, nil, proj))
    assert.are.same({ "update", { NULL, "4", "d" }, { NULL, "4", "d" } }, row(b, 1))
    assert.are.equal(0, cur:fetch(b, 3, nil, proj))
    b:free()
  end)

  it("fails on a flag other than INSERT, UPDATE or DELETE, keeping the rows before it", function()
    for _, case in ipairs({ { "'MERGE'", "'MERGE'" }, { "NULL", "NULL" }, { "'INSERTED'", "'INSERTED'" } }) do
      local cur = assert(c:stream("SELECT 't', 'INSERT', 1 UNION ALL SELECT 't', 'DELETE', 2 UNION ALL SELECT 't', " ..
        case[1] .. ", 3"))
      local b = batch.new({ { name = "id", class = "num" } })
      local n, err, code = cur:fetch(b, 100, nil, { cols = { 3 }, flag = 2 })
      assert.is_nil(n)
      assert.are.equal("row 3: flag column 2 holds " .. case[2] .. ", not INSERT, UPDATE or DELETE", err)
      assert.is_nil(code)
      assert.are.same({ 1, 0, 1 }, { b:counts() })
      cur:close()
      b:free()
    end
    assert.are.same({ { "1" } }, c:query("SELECT 1")) -- close() read the rest: the conn is usable
  end)

  it("raises on a projection that does not fit the batch or the cursor", function()
    local cur = assert(c:stream(DIFF))
    local b = batch.new(cols)
    assert.has_error(function() cur:fetch(b, 10, nil, { cols = { 3, 4 }, flag = 2 }) end,
      "fetch: projection cols must list one cursor column per batch column (3)")
    assert.has_error(function() cur:fetch(b, 10, nil, { cols = { 3, 4, 6 }, flag = 2 }) end,
      "fetch: projection column 6 is not a cursor column (1..5)")
    assert.has_error(function() cur:fetch(b, 10, nil, { cols = { 3, 4, 5 } }) end,
      "fetch: projection flag 0 is not a cursor column (1..5)")
    assert.are.equal(0, b:count())
    cur:close()
    b:free()
  end)
end)
