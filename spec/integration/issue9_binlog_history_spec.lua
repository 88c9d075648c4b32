-- Issue 9, defect 10: a source whose binlog history changed (RESET MASTER, a
-- restore, a failover to another server with coinciding file names) is not
-- trusted. Resuming at a saved mysql-bin.000001:N used to land inside an event
-- of the new history ("log event entry exceeded max_allowed_packet", wrong
-- advice) or, on an event boundary, to skip the new history's events silently.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local cjson = require("cjson")

mdb.describe("issue 9: a changed binlog history is the log gone", function()
  local src, sink, home
  setup(function()
    src = mdb.start({ name = "i9bh-source", binlog = true })
    sink = mdb.start({ name = "i9bh-sink" })
    home = cli.tmpdir()
  end)
  teardown(function() os.execute("rm -rf " .. home) end)

  local function run(cp, extra)
    local a = { "run", "pipelines/binlog_to_mysql.lua", "--once", "--set", "source_uri=" .. src.uri,
      "--set", "sink_uri=" .. sink.uri, "--set", "tables=d.t:d2.t", "--set", "checkpoint=" .. home .. "/" .. cp }
    for _, x in ipairs(extra or {}) do a[#a + 1] = x end
    return cli.run(a, { env = { MOCDC_HOME = home } })
  end
  local Q = "SELECT id, v FROM %s ORDER BY id"
  local HISTORY = [[CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, v VARCHAR(10));
    INSERT INTO d.t VALUES (1, '%s'), (2, '%s'), (3, '%s');]]

  -- a fresh binlog (mysql-bin.000001), the table copied, then one change
  -- streamed: the watermark is the position after that change, with its GTID
  local function streamed(cp)
    src:sql("SET sql_log_bin = 0; DROP DATABASE IF EXISTS d; SET sql_log_bin = 1; RESET MASTER; " ..
      HISTORY:format("a", "b", "c"))
    sink:sql("DROP DATABASE IF EXISTS d2; DROP DATABASE IF EXISTS mocdc")
    local rc, _, err = run(cp)
    assert.equals(0, rc, err)
    src:sql("INSERT INTO d.t VALUES (4, 'd')")
    rc, _, err = run(cp)
    assert.equals(0, rc, err)
    assert.same(src:rows(Q:format("d.t")), sink:rows(Q:format("d2.t")))
    local p = cjson.decode(sink:rows("SELECT position FROM mocdc.watermark WHERE source_table = 'd.t'")[1][1])
    assert.equals("mysql-bin.000001", p.file)
    assert.matches("^0%-%d+%-4$", p.gtid)
    return p
  end

  local function lit(x) return (x:gsub("%p", "%%%0")) end
  local function assert_log_gone(rc, err, p, what)
    assert.equals(1, rc, err)
    assert.is_true(cli.one_line(err), err)
    local line = err:match("mocdc: error: [^\n]*")
    assert.matches("^" .. lit("mocdc: error: source ") .. "root@127%.0%.0%.1:" .. src.port .. lit(": its binlog " ..
      "history changed since the checkpoint (RESET MASTER, a restore, or another server at that address): the saved " ..
      "position mysql-bin.000001:" .. p.pos .. " gtid " .. p.gtid .. " " .. what .. "; the changes since then cannot " ..
      "be read from it: re-run with a full copy (drop the sink watermark: mocdc task restart, or delete " ..
      "checkpointLocation and the mocdc.watermark rows)") .. "$", line)
  end

  it("stops with one line when the saved offset falls inside an event of the new history", function()
    local p = streamed("inside")
    local before = sink:rows(Q:format("d2.t"))
    -- RESET MASTER, then a new history longer than the saved offset
    src:sql("SET sql_log_bin = 0; DROP DATABASE d; SET sql_log_bin = 1; RESET MASTER; " .. HISTORY:format("x", "y", "z"))
    for i = 10, 40 do src:sql(string.format("INSERT INTO d.t VALUES (%d, 'long value')", i)) end
    local size = tonumber(src:rows("SHOW MASTER STATUS")[1][2])
    assert.is_true(size > p.pos, "the new history must reach past the saved offset")
    local rc, _, err = run("inside")
    assert_log_gone(rc, err, p, "is not an event boundary of that file any more")
    assert.same(before, sink:rows(Q:format("d2.t")))
  end)

  it("stops when the saved offset is an event boundary of the new history (it used to skip it silently)", function()
    local p = streamed("boundary")
    -- the same statements, the same sizes, other values and other GTIDs: the
    -- saved offset is an event boundary of the new history
    src:sql("SET sql_log_bin = 0; DROP DATABASE d; SET sql_log_bin = 1; RESET MASTER; SET gtid_seq_no = 100; " ..
      HISTORY:format("x", "y", "z") .. " INSERT INTO d.t VALUES (4, 'w');")
    assert.equals(p.pos, tonumber(src:rows("SHOW MASTER STATUS")[1][2]))
    src:sql("INSERT INTO d.t VALUES (5, 'v')")
    local rc, _, err = run("boundary")
    local gtid = src:rows("SELECT BINLOG_GTID_POS('mysql-bin.000001', " .. p.pos .. ")")[1][1]
    assert.matches("^0%-%d+%-103$", gtid)
    assert_log_gone(rc, err, p, "is after gtid " .. gtid .. " now")
    -- a full copy (a new checkpoint and no watermark) is the way on
    sink:sql("DROP DATABASE d2; DROP DATABASE mocdc")
    rc, _, err = run("boundary2")
    assert.equals(0, rc, err)
    assert.same(src:rows(Q:format("d.t")), sink:rows(Q:format("d2.t")))
  end)

  it("resumes as before when the history is the same (rotated, and across a restart of the source)", function()
    local p = streamed("same")
    src:sql("FLUSH BINARY LOGS; INSERT INTO d.t VALUES (6, 'f')")
    src:stop()
    src:start_again()
    src:sql("INSERT INTO d.t VALUES (7, 'g')")
    local rc, _, err = run("same")
    assert.equals(0, rc, err)
    assert.same(src:rows(Q:format("d.t")), sink:rows(Q:format("d2.t")))
    local p2 = cjson.decode(sink:rows("SELECT position FROM mocdc.watermark WHERE source_table = 'd.t'")[1][1])
    assert.is_not.equals(p.file, p2.file)
    -- a DDL as the last event before the saved position: the position keeps its GTID
    src:sql("ALTER TABLE d.t ADD COLUMN n INT")
    rc, _, err = run("same", { "--set", "merge_schema=true" })
    assert.equals(0, rc, err)
    local p3 = cjson.decode(sink:rows("SELECT position FROM mocdc.watermark WHERE source_table = 'd.t'")[1][1])
    assert.equals(src:rows("SELECT @@gtid_binlog_pos")[1][1], p3.gtid)
    src:sql("INSERT INTO d.t VALUES (8, 'h', 1)")
    rc, _, err = run("same", { "--set", "merge_schema=true" })
    assert.equals(0, rc, err)
    assert.same(src:rows(Q:format("d.t")), sink:rows(Q:format("d2.t")))
  end)
end)
