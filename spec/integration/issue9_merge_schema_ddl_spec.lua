-- Issue 9 promise: mergeSchema = "true" applies CREATE / TRUNCATE / DROP to the
-- sink and RENAME stops with one line, on the mysql sink and on the file sink
-- (running pipelines: the DDL arrives while they stream). Snapshot diff
-- (load.snapshot + duration) reads rows, not DDL: it refuses mergeSchema, a
-- TRUNCATE arrives as deletes, a changed or dropped table stops it with one line.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local cjson = require("cjson")
local util = require("mocdc.util.lib")

mdb.describe("mergeSchema DDL (issue 9 promise)", function()
  local src, sink, home
  setup(function()
    src = mdb.start({ name = "md-source", binlog = true })
    sink = mdb.start({ name = "md-sink" })
    home = cli.tmpdir()
  end)
  teardown(function() os.execute("rm -rf " .. home) end)

  local function fresh(db)
    src:sql("DROP DATABASE IF EXISTS " .. db .. "; CREATE DATABASE " .. db .. "; " ..
      "CREATE TABLE " .. db .. ".t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO " .. db .. ".t VALUES (1, 'a'), (2, 'b')")
    sink:sql("DROP DATABASE IF EXISTS " .. db .. "; DROP DATABASE IF EXISTS mocdc")
  end

  local function read(path)
    local f = io.open(path)
    if not f then return "" end
    local s = f:read("*a")
    f:close()
    return s
  end

  -- start a pipeline that keeps streaming; returns rc() and the log path
  local function start(name, args)
    local logf = home .. "/" .. name .. ".log"
    local pid, rc = cli.spawn_rc(args, logf, { env = { MOCDC_HOME = home } })
    finally(function() if rc() == nil then util.kill(pid, 9) end end)
    return rc, logf
  end

  local function stopped_with(rc, logf, code, line)
    cli.eventually(function() return rc() ~= nil end, 30, "the pipeline to stop")
    local log = read(logf)
    assert.equals(code, rc(), log)
    assert.matches(line, log:match("([^\n]*)\n$"), 1)
    assert.equals(1, select(2, log:gsub("mocdc: error: ", "")), log)
  end

  local RENAMED = "^mocdc: error: source DDL RENAME TABLE DB%.t at mysql%-bin%.%d+:%d+: renaming a synced table is not " ..
    "supported; re%-run the pipeline with the new name and a full copy$"

  it("mysql sink: TRUNCATE, DROP + CREATE applied while streaming, RENAME stops", function()
    fresh("mq")
    local rc, logf = start("mq", { "run", "pipelines/binlog_to_mysql.lua", "--set", "source_uri=" .. src.uri,
      "--set", "sink_uri=" .. sink.uri, "--set", "checkpoint=" .. home .. "/mq", "--set", "tables=mq.t",
      "--set", "merge_schema=true" })
    local function rows() return sink:rows("SELECT * FROM mq.t ORDER BY id") end
    cli.eventually(function() return #rows() == 2 end, 30, "the full copy")
    src:sql("TRUNCATE TABLE mq.t; INSERT INTO mq.t VALUES (3, 'c')")
    cli.eventually(function() local r = rows() return #r == 1 and r[1][1] == "3" end, 30, "the truncate")
    src:sql("DROP TABLE mq.t; CREATE TABLE mq.t (id INT PRIMARY KEY, w INT NOT NULL); INSERT INTO mq.t VALUES (4, 44)")
    cli.eventually(function() local r = rows() return #r == 1 and r[1][2] == "44" end, 30, "the re-created table")
    assert.same({ { "id" }, { "w" } }, (sink:rows("SELECT column_name FROM information_schema.columns " ..
      "WHERE table_schema = 'mq' AND table_name = 't' ORDER BY ordinal_position")))
    src:sql("RENAME TABLE mq.t TO mq.t2")
    stopped_with(rc, logf, 1, (RENAMED:gsub("DB", "mq")))
    assert.same({ { "4", "44" } }, rows())
  end)

  it("file sink: TRUNCATE, DROP and CREATE become records while streaming, RENAME stops", function()
    fresh("fq")
    local out = home .. "/files/{db}/{table}"
    local rc, logf = start("fq", { "run", "pipelines/binlog_to_files.lua", "--set", "host=127.0.0.1",
      "--set", "port=" .. src.port, "--set", "userName=root", "--set", "password=" .. mdb.PASSWORD,
      "--set", "databaseNamePattern=fq", "--set", "tableNamePattern=t", "--set", "path=" .. out,
      "--set", "checkpointLocation=" .. home .. "/fq", "--set", "duration=0.1", "--set", "mergeSchema=true" })
    local path = home .. "/files/fq/t/changes.jsonl"
    local function recs()
      local list = {}
      for line in read(path):gmatch("[^\n]+") do
        local r = cjson.decode(line)
        list[#list + 1] = r.op .. (r.verb and (" " .. r.verb .. " " .. r.sql) or (" " .. r.key.id))
      end
      return list
    end
    cli.eventually(function() return #recs() == 2 end, 30, "the snapshot records")
    -- (the harness's source logs no column names: the rows of insert 3 are decoded with the
    -- table's definition, read before it is dropped)
    src:sql("TRUNCATE TABLE fq.t; INSERT INTO fq.t VALUES (3, 'c')")
    cli.eventually(function() return #recs() == 4 end, 30, "the truncate record")
    src:sql("DROP TABLE fq.t; CREATE TABLE fq.t (id INT PRIMARY KEY, w INT); INSERT INTO fq.t VALUES (4, 44)")
    cli.eventually(function() return #recs() == 7 end, 30, "the DROP and CREATE records")
    assert.same({ "insert 1", "insert 2", "ddl TRUNCATE TRUNCATE TABLE fq.t", "insert 3",
      "ddl DROP DROP TABLE `fq`.`t` /* generated by server */", "ddl CREATE CREATE TABLE fq.t (id INT PRIMARY KEY, w INT)",
      "insert 4" }, recs())
    src:sql("RENAME TABLE fq.t TO fq.t2")
    stopped_with(rc, logf, 1, (RENAMED:gsub("DB", "fq")))
    assert.equals(7, #recs())
  end)

  describe("snapshot diff", function()
    it("refuses mergeSchema with one line", function()
      local p = home .. "/diff_merge.lua"
      local f = assert(io.open(p, "w"))
      f:write("save.append(load.snapshot { uri = var 'source_uri', tables = 'sq.t' }, var 'sink_uri', " ..
        "{ duration = 1, mergeSchema = 'true' })\n")
      f:close()
      local rc, _, err = cli.run({ "run", p, "--set", "source_uri=" .. src.uri, "--set", "sink_uri=" .. sink.uri, "--once" },
        { env = { MOCDC_HOME = home } })
      assert.equals(2, rc, err)
      assert.equals("mocdc: error: option mergeSchema is not supported by snapshot+duration source\n", err)
    end)

    local function diff_run(name)
      return start(name, { "run", "pipelines/snapshot_sync.lua", "--set", "source_uri=" .. src.uri,
        "--set", "sink_uri=" .. sink.uri, "--set", "checkpoint=" .. home .. "/" .. name, "--set", "tables=sq.t",
        "--set", "interval=0.2" })
    end

    it("a TRUNCATE arrives as deletes, a changed column list stops with one line", function()
      fresh("sq")
      local rc, logf = diff_run("sq1")
      local function n() return sink:rows("SELECT COUNT(*) FROM sq.t")[1][1] end
      cli.eventually(function() return n() == "2" end, 30, "the full copy")
      src:sql("TRUNCATE TABLE sq.t")
      cli.eventually(function() return n() == "0" end, 30, "the truncate")
      src:sql("ALTER TABLE sq.t ADD COLUMN note INT")
      stopped_with(rc, logf, 2, "^mocdc: error: source table sq%.t changed its columns since the pipeline started; " ..
        "restart the pipeline %(the sink table must be altered to match first%)$")
    end)

    it("a dropped table stops it with one line saying so", function()
      fresh("sq")
      local rc, logf = diff_run("sq2")
      cli.eventually(function() return sink:rows("SELECT COUNT(*) FROM sq.t")[1][1] == "2" end, 30, "the full copy")
      src:sql("DROP TABLE sq.t")
      stopped_with(rc, logf, 2, "^mocdc: error: source table sq%.t no longer exists %(dropped or renamed%) since the " ..
        "pipeline started; take it out of the selection, or re%-create it, and restart the pipeline$")
    end)
  end)
end)
