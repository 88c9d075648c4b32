-- Issue 9 defect 4: a DML statement logged in STATEMENT format (a session set
-- binlog_format=STATEMENT) stops only the synced tables it writes; one on a
-- table the pipeline (or a task) does not sync is passed over.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local cdc = require("mocdc.engine.binlog")
local cjson = require("cjson")

mdb.describe("STATEMENT-format events (issue 9 defect 4)", function()
  local src, sink, home
  setup(function()
    src = mdb.start({ name = "sf-source", binlog = true })
    sink = mdb.start({ name = "sf-sink" })
    home = cli.tmpdir()
  end)
  teardown(function()
    cli.run({ "task", "drop", "--all", "--source-uri", src.uri, "--state-dir", home })
    os.execute("rm -rf " .. home)
  end)

  local function fresh()
    src:sql("DROP DATABASE IF EXISTS sf; CREATE DATABASE sf; " ..
      "CREATE TABLE sf.t (id INT PRIMARY KEY, v VARCHAR(10)); CREATE TABLE sf.u (id INT PRIMARY KEY, v VARCHAR(10)); " ..
      "CREATE TABLE sf.other (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO sf.t VALUES (1, 'a'); INSERT INTO sf.u VALUES (1, 'a')")
    sink:sql("DROP DATABASE IF EXISTS sf; DROP DATABASE IF EXISTS mocdc")
  end

  local function run(cp, tables)
    return cli.run({ "run", "pipelines/binlog_to_mysql.lua", "--set", "source_uri=" .. src.uri,
      "--set", "sink_uri=" .. sink.uri, "--set", "checkpoint=" .. home .. "/" .. cp, "--set", "tables=" .. tables,
      "--once" }, { env = { MOCDC_HOME = home } })
  end

  local function stmt(sql) src:sql("SET SESSION binlog_format = 'STATEMENT'; " .. sql) end

  it("finds the tables a DML statement writes", function()
    local function t(sql) return cdc.dml_targets(sql, "def") end
    assert.same({ { db = "def", table = "x" } }, t("INSERT INTO x VALUES (1)"))
    assert.same({ { db = "d", table = "x`y" } }, t("insert low_priority ignore into `d`.`x``y` (a) select * from t"))
    assert.same({ { db = "d", table = "x" } }, t("REPLACE d.x SET a = 1"))
    assert.same({ { db = "def", table = "x" } }, t("UPDATE /* c */ x SET a = (SELECT 1 FROM t)"))
    assert.same({ { db = "def", table = "x" } }, t("UPDATE x AS alias SET a = 1"))
    assert.same({ { db = "def", table = "x" } }, t("DELETE QUICK FROM x WHERE a IN (SELECT a FROM t)"))
    assert.same({ { db = "d", table = "x" } }, t("LOAD DATA LOCAL INFILE 'f.txt' REPLACE INTO TABLE d.x"))
    -- multi-table forms: not parsed, every table they mention may be written
    assert.is_nil(t("UPDATE x JOIN t ON x.a = t.a SET x.b = 1"))
    assert.is_nil(t("DELETE x FROM x JOIN t USING (a)"))
  end)

  it("goes on past a statement on a table it does not sync, stops on one it syncs with one line", function()
    fresh()
    local rc, _, err = run("p", "sf.t")
    assert.equals(0, rc, err)
    stmt("INSERT INTO sf.other VALUES (1, 'x'); UPDATE sf.other SET v = 'y'")
    src:sql("INSERT INTO sf.t VALUES (2, 'b')")
    stmt("DELETE FROM sf.other WHERE id = 1")
    src:sql("INSERT INTO sf.t VALUES (3, 'c')")
    rc, _, err = run("p", "sf.t")
    assert.equals(0, rc, err)
    assert.same({ { "1", "a" }, { "2", "b" }, { "3", "c" } }, (sink:rows("SELECT * FROM sf.t ORDER BY id")))
    -- a statement on the synced table itself: stops, naming the table and the fix
    stmt("UPDATE sf.t SET v = 'z' WHERE id = 1")
    rc, _, err = run("p", "sf.t")
    assert.equals(1, rc, err)
    assert.is_true(cli.one_line(err), err)
    assert.matches("^mocdc: error: source root@127%.0%.0%.1:%d+ logged a DML statement on sf%.t in STATEMENT format at " ..
      "mysql%-bin%.%d+:%d+ %(\"UPDATE sf%.t SET v = 'z' WHERE id = 1\"%); its rows cannot be replicated: keep " ..
      "binlog_format=ROW for every session %(SET GLOBAL binlog_format=ROW%), then re%-run with a full copy of sf%.t\n$",
      err:match("[^\n]*\n$"))
  end)

  it("with two synced tables, a statement on one stops that one only", function()
    fresh()
    local rc, _, err = run("two", "sf.t,sf.u")
    assert.equals(0, rc, err)
    stmt("INSERT INTO sf.u VALUES (2, 'b')")
    src:sql("INSERT INTO sf.t VALUES (2, 'b'); INSERT INTO sf.u VALUES (3, 'c')")
    rc, _, err = run("two", "sf.t,sf.u")
    assert.equals(1, rc, err)
    assert.matches("1 table%(s%) stopped, the others are in sync: sf%.u: source .* logged a DML statement on sf%.u", err)
    assert.same({ { "1", "a" }, { "2", "b" } }, (sink:rows("SELECT * FROM sf.t ORDER BY id")))
    assert.same({ { "1", "a" } }, (sink:rows("SELECT * FROM sf.u ORDER BY id")))
  end)

  it("a task syncing one table keeps running past a statement on another", function()
    fresh()
    local function task(args)
      local a = { "task" }
      for _, x in ipairs(args) do a[#a + 1] = x end
      a[#a + 1] = "--state-dir"
      a[#a + 1] = home
      local rc, out, err = cli.run(a)
      assert.equals(0, rc, err)
      return out
    end
    task({ "create", "--task-name", "sf", "--source-uri", src.uri, "--sink-type", "mysql", "--sink-uri", sink.uri,
      "--tables", "sf.t:sf.t_task" })
    cli.eventually(function() return sink:rows("SELECT COUNT(*) FROM sf.t_task")[1][1] == "1" end, 30, "the full copy")
    stmt("INSERT INTO sf.other VALUES (5, 'x')")
    src:sql("INSERT INTO sf.t VALUES (5, 'e')")
    cli.eventually(function() return sink:rows("SELECT COUNT(*) FROM sf.t_task")[1][1] == "2" end, 30,
      "the row after the statement")
    local shown = cjson.decode(task({ "show", "--task-name", "sf", "--source-uri", src.uri }))[1]
    assert.equals("running", shown.state)
    assert.equals("", shown["err-msg"])
    task({ "drop", "--task-name", "sf", "--source-uri", src.uri })
  end)
end)
