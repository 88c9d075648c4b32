-- Issue 9, README promises of `mocdc run` and `mocdc sql` that had no spec,
-- each through the binary as a subprocess: the default checkpointLocation,
-- :drop{} and :map returning nil through the full copy and the binlog,
-- load.snapshot + duration, load.matrixone (MatrixOne emulated on MariaDB by
-- spec/helpers/mo_emulator.lua, loaded by the pipeline script itself), and
-- `mocdc sql` taking the downstream password from MOCDC_SINK_PASSWORD.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local cjson = require("cjson")
local checkpoint = require("mocdc.checkpoint")

mdb.describe("issue 9: mocdc run / mocdc sql promises", function()
  local src, sink, home
  setup(function()
    src = mdb.start({ name = "prom-source", binlog = true })
    sink = mdb.start({ name = "prom-sink" })
    home = cli.tmpdir()
    src:sql([[CREATE DATABASE pr;
      CREATE TABLE pr.t (id INT PRIMARY KEY, status VARCHAR(10), secret VARCHAR(20), note VARCHAR(20));
      INSERT INTO pr.t VALUES (1, 'New', 's1', 'a'), (2, 'Test', 's2', 'b'), (3, 'Shipped', 's3', 'c'),
        (4, 'Test', 's4', 'd'), (5, 'New', 's5', 'e');
      CREATE TABLE pr.m LIKE pr.t; INSERT INTO pr.m SELECT * FROM pr.t;
      CREATE TABLE pr.d (id INT PRIMARY KEY, v INT); INSERT INTO pr.d VALUES (1, 10), (2, 20), (3, 30);
      CREATE TABLE pr.v (id INT PRIMARY KEY, v INT) WITH SYSTEM VERSIONING;
      INSERT INTO pr.v VALUES (1, 10), (2, 20), (3, 30);]])
  end)
  teardown(function() os.execute("rm -rf " .. cli.q(home)) end)

  local function script(name, text)
    local p = home .. "/" .. name .. ".lua"
    local f = assert(io.open(p, "w"))
    f:write(text)
    f:close()
    return p
  end
  local function run(p, sets, env)
    local args = { "run", p, "--once", "--set", "source_uri=" .. src.uri, "--set", "sink_uri=" .. sink.uri }
    for _, kv in ipairs(sets or {}) do
      args[#args + 1] = "--set"
      args[#args + 1] = kv
    end
    return cli.run(args, { env = env or { MOCDC_HOME = home } })
  end
  local function ok_run(...)
    local rc, out, err = run(...)
    assert.are.equal(0, rc, err)
    return out
  end

  it("keeps the checkpoint in $MOCDC_HOME/pipelines/<streamName or script name> by default", function()
    local p = script("cp_default", [[
      local s = load.snapshot { uri = var "source_uri", tables = "pr.t:" .. var("dst", "prdef.t") }
      save.append(s, var "sink_uri")
    ]])
    local h = home .. "/h"
    local function stored(dir)
      local path = dir .. "/checkpoint.db"
      local f = io.open(path)
      assert.is_not_nil(f, "no checkpoint at " .. path)
      f:close()
      local store = assert(checkpoint.open_location(dir))
      local v = store:get("table/pr.t")
      store:close()
      return v and cjson.decode(v).phase
    end
    ok_run(p, {}, { MOCDC_HOME = h })
    assert.are.equal("done", stored(h .. "/pipelines/cp_default"))
    ok_run(p, { "streamName=named", "dst=prdef.t2" }, { MOCDC_HOME = h })
    assert.are.equal("done", stored(h .. "/pipelines/named"))
    local q = script("cp_declared", [[
      set { streamName = "declared" }
      save.append(load.snapshot { uri = var "source_uri", tables = "pr.t:prdef.t3" }, var "sink_uri")
    ]])
    ok_run(q, {}, { MOCDC_HOME = h })
    assert.are.equal("done", stored(h .. "/pipelines/declared"))
    assert.are.same({ { "5" }, { "5" }, { "5" } }, sink:rows("SELECT COUNT(*) FROM prdef.t UNION ALL " ..
      "SELECT COUNT(*) FROM prdef.t2 UNION ALL SELECT COUNT(*) FROM prdef.t3"))
  end)

  it(":drop{} and :rename{} shape the sink table, through the full copy and the binlog", function()
    local p = script("drop", [[
      local s = load.binlog { uri = var "source_uri", tables = "pr.t:prdrop.t" }
      save.append(s:drop { "secret" }:rename { note = "remark" }, var "sink_uri", { checkpointLocation = var "checkpoint" })
    ]])
    local sets = { "checkpoint=" .. home .. "/cp-drop" }
    ok_run(p, sets)
    local function same()
      assert.are.same(src:rows("SELECT id, status, note FROM pr.t ORDER BY id"),
        sink:rows("SELECT * FROM prdrop.t ORDER BY id"))
    end
    assert.are.same({ { "id" }, { "status" }, { "remark" } }, sink:rows("SELECT column_name FROM " ..
      "information_schema.columns WHERE table_schema = 'prdrop' AND table_name = 't' ORDER BY ordinal_position"))
    same()
    src:sql([[INSERT INTO pr.t VALUES (6, 'New', 's6', 'f');
      UPDATE pr.t SET secret = 'x2', note = 'bb' WHERE id = 2; UPDATE pr.t SET secret = 'only' WHERE id = 3;
      DELETE FROM pr.t WHERE id = 5;]])
    local out = ok_run(p, sets)
    assert.matches("^pr%.t %-> prdrop%.t: 4 change%(s%) applied, in sync at ", out)
    same()
  end)

  it(":map returning nil drops the row, through the full copy and the binlog (rows moving in and out)", function()
    local p = script("map_nil", [[
      local s = load.binlog { uri = var "source_uri", tables = "pr.m:prmap.m" }
      save.append(s:map(function(r)
        if r.status == "Test" then return nil end
        r.note = r.note .. "!"
        return r
      end), var "sink_uri", { checkpointLocation = var "checkpoint" })
    ]])
    local sets = { "checkpoint=" .. home .. "/cp-map" }
    local function same()
      assert.are.same(src:rows("SELECT id, status, secret, CONCAT(note, '!') FROM pr.m WHERE status <> 'Test' ORDER BY id"),
        sink:rows("SELECT * FROM prmap.m ORDER BY id"))
    end
    ok_run(p, sets)
    assert.are.same({ { "1" }, { "3" }, { "5" } }, sink:rows("SELECT id FROM prmap.m ORDER BY id"))
    same()
    src:sql([[INSERT INTO pr.m VALUES (6, 'Test', 's6', 'f'), (7, 'New', 's7', 'g');
      UPDATE pr.m SET status = 'Test' WHERE id = 1;
      UPDATE pr.m SET status = 'New' WHERE id = 2;
      UPDATE pr.m SET note = 'dd' WHERE id = 4;
      DELETE FROM pr.m WHERE id IN (3, 6);]])
    ok_run(p, sets)
    assert.are.same({ { "2" }, { "5" }, { "7" } }, sink:rows("SELECT id FROM prmap.m ORDER BY id"))
    same()
  end)

  it("load.snapshot + duration: full copy, then a snapshot-diff iteration per run", function()
    local p = script("diff", [[
      local s = load.snapshot { uri = var "source_uri", tables = "pr.d:prdiff.d" }
      save.append(s, var "sink_uri", { duration = 1, checkpointLocation = var "checkpoint" })
    ]])
    local sets = { "checkpoint=" .. home .. "/cp-diff" }
    local out = ok_run(p, sets)
    assert.matches("^pr%.d %-> prdiff%.d: 3 rows copied in [%d.]+ s\n$", out)
    src:sql("INSERT INTO pr.d VALUES (4, 40); UPDATE pr.d SET v = 21 WHERE id = 2; DELETE FROM pr.d WHERE id = 3;")
    out = ok_run(p, sets)
    assert.matches("^pr%.d %-> prdiff%.d: 3 change%(s%) applied %(1 inserts, 1 updates, 1 deletes%) in [%d.]+ s\n$", out)
    assert.are.same(src:rows("SELECT * FROM pr.d ORDER BY id"), sink:rows("SELECT * FROM prdiff.d ORDER BY id"))
  end)

  it("load.matrixone: snapshot copy, then DATA BRANCH DIFF between the snapshots of two runs", function()
    local p = script("mo", [[
      local emulator = require("spec.helpers.mo_emulator")
      local mo = require("mocdc.engine.matrixone")
      local snapshot = require("mocdc.source.mysql")
      local snaps_file = var "snaps"
      mo.open = function(o)
        local base = snapshot.open(o)
        base.c = emulator.wrap(base.c, { branch_diff = true, snapshots_file = snaps_file,
          pitr = { { "p", "x", "x", "database", "sys", "pr", "*", "2", "h" } } })
        return mo.wrap(base.c, o, base)
      end
      local s = load.matrixone { uri = var "source_uri", tables = "pr.v:prmo.v" }
      save.append(s, var "sink_uri", { duration = 1, checkpointLocation = var "checkpoint" })
    ]])
    local sets = { "checkpoint=" .. home .. "/cp-mo", "snaps=" .. home .. "/mo-snapshots.json" }
    local out = ok_run(p, sets)
    assert.matches("^pr%.v %-> prmo%.v: 3 rows copied in [%d.]+ s\n$", out)
    src:sql("INSERT INTO pr.v VALUES (4, 40); UPDATE pr.v SET v = 21 WHERE id = 2; DELETE FROM pr.v WHERE id = 3;")
    out = ok_run(p, sets)
    assert.matches("^pr%.v %-> prmo%.v: 3 change%(s%) applied %(1 inserts, 1 updates, 1 deletes%) in [%d.]+ s\n$", out)
    assert.are.same(src:rows("SELECT * FROM pr.v ORDER BY id"), sink:rows("SELECT * FROM prmo.v ORDER BY id"))
    -- the previous iteration's snapshot was dropped: one left
    local f = assert(io.open(home .. "/mo-snapshots.json"))
    local snaps = cjson.decode(f:read("*a"))
    f:close()
    local n = 0
    for _ in pairs(snaps) do n = n + 1 end
    assert.are.equal(1, n)
  end)

  it("mocdc sql takes the downstream password from MOCDC_SINK_PASSWORD", function()
    local u = "mysql://root@127.0.0.1:" .. sink.port
    local rc, out, err = cli.run({ "sql", "--sink-uri", u, "SHOW SUBSCRIPTIONS" },
      { env = { MOCDC_SINK_PASSWORD = mdb.PASSWORD, MOCDC_HOME = home } })
    assert.are.equal(0, rc, err)
    assert.matches("| subscription_name | upstream_conn", out, 1, true)
    assert.is_nil((out .. err):find(mdb.PASSWORD, 1, true))
    -- a wrong one is used too (and refused by the server), none at all is refused
    for _, env in ipairs({ { MOCDC_SINK_PASSWORD = "wrong-pw", MOCDC_HOME = home }, { MOCDC_HOME = home } }) do
      rc, out, err = cli.run({ "sql", "--sink-uri", u, "SHOW SUBSCRIPTIONS" }, { env = env })
      assert.are.equal("", out)
      assert.is_true(cli.one_line(err), err)
      assert.matches("^mocdc: error: cannot connect to downstream root@127%.0%.0%.1:" .. sink.port ..
        ": Access denied for user 'root'@'127%.0%.0%.1' %(using password: " ..
        (env.MOCDC_SINK_PASSWORD and "YES" or "NO") .. "%)", err)
      assert.is_nil(err:find("wrong-pw", 1, true))
      assert.are.equal(1, rc)
    end
  end)
end)
