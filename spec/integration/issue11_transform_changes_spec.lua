-- Issue 11, item 1 (correctness on changes): the sink equals T(source) after
-- streamed changes, T the transform chain applied to each source row. The
-- issue's two scenarios literally, plus a map that changes the key column.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")

mdb.describe("issue 11: transforms on the binlog path", function()
  local src, sink, home
  setup(function()
    src = mdb.start({ name = "i11-source", binlog = true })
    sink = mdb.start({ name = "i11-sink" })
    home = cli.tmpdir()
    src:sql([[CREATE DATABASE d;
      CREATE TABLE d.t (id INT PRIMARY KEY, status VARCHAR(10), v INT);
      INSERT INTO d.t VALUES (1, 'keep', 10), (2, 'keep', 20), (3, 'drop', 30);
      CREATE TABLE d.r LIKE d.t; INSERT INTO d.r SELECT * FROM d.t;
      CREATE TABLE d.k LIKE d.t; INSERT INTO d.k SELECT * FROM d.t;]])
  end)
  teardown(function() os.execute("rm -rf " .. cli.q(home)) end)

  local function run(name, body)
    local p = home .. "/" .. name .. ".lua"
    local f = assert(io.open(p, "w"))
    f:write(body)
    f:close()
    local rc, out, err = cli.run({ "run", p, "--once", "--set", "source_uri=" .. src.uri, "--set",
      "sink_uri=" .. sink.uri, "--set", "checkpoint=" .. home .. "/cp-" .. name }, { env = { MOCDC_HOME = home } })
    assert.are.equal(0, rc, err)
    return out
  end

  it("filter: an update moving a row out of the filter deletes it, one moving it in inserts it", function()
    local script = [[
      local s = load.binlog { uri = var "source_uri", tables = "d.t:d2.t" }
      save.append(s:filter(function(r) return r.status == "keep" end), var "sink_uri",
        { checkpointLocation = var "checkpoint" })
    ]]
    run("filter", script)
    assert.are.same({ { "1" }, { "2" } }, sink:rows("SELECT id FROM d2.t ORDER BY id"))
    src:sql("UPDATE d.t SET status='drop' WHERE id=1; UPDATE d.t SET status='keep' WHERE id=3")
    run("filter", script)
    assert.are.same(src:rows("SELECT * FROM d.t WHERE status = 'keep' ORDER BY id"),
      sink:rows("SELECT * FROM d2.t ORDER BY id"))
    assert.are.same({ { "2" }, { "3" } }, sink:rows("SELECT id FROM d2.t ORDER BY id"))
  end)

  it("rename: streamed inserts, updates and deletes write the renamed column", function()
    local script = [[
      local s = load.binlog { uri = var "source_uri", tables = "d.r:d2.r" }
      save.append(s:rename { v = "v2" }, var "sink_uri", { checkpointLocation = var "checkpoint" })
    ]]
    run("rename", script)
    src:sql("INSERT INTO d.r VALUES (4, 'keep', 40); UPDATE d.r SET v = 21 WHERE id = 2; DELETE FROM d.r WHERE id = 3")
    run("rename", script)
    assert.are.same(src:rows("SELECT id, status, v FROM d.r ORDER BY id"),
      sink:rows("SELECT id, status, v2 FROM d2.r ORDER BY id"))
  end)

  it("a map that changes the key: an update deletes the old mapped key and writes the new one", function()
    local script = [[
      local s = load.binlog { uri = var "source_uri", tables = "d.k:d2.k" }
      save.append(s:map(function(r) r.id = tostring(tonumber(r.id) * 10); return r end), var "sink_uri",
        { checkpointLocation = var "checkpoint" })
    ]]
    run("key", script)
    assert.are.same({ { "10" }, { "20" }, { "30" } }, sink:rows("SELECT id FROM d2.k ORDER BY id"))
    src:sql("UPDATE d.k SET id = 5 WHERE id = 1; UPDATE d.k SET v = 22 WHERE id = 2; DELETE FROM d.k WHERE id = 3")
    run("key", script)
    assert.are.same(src:rows("SELECT id * 10, status, v FROM d.k ORDER BY id"),
      sink:rows("SELECT * FROM d2.k ORDER BY id"))
  end)
end)
