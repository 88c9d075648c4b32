-- Issue 9: the sink options of README, each observed on the sink server (its
-- general log) through `mocdc run`:
--   maxSqlLength    default the smaller of 4 MiB and the sink's max_allowed_packet; or the given bytes
--   flushInterval / duration   seconds between sink commits while the stream is busy
--   sendSqlTimeout  seconds a sink statement may take before mocdc gives up on it
--   chunkSize       rows per sink transaction of the full copy (default 100000)
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local conn = require("mocdc.conn")
local util = require("mocdc.util.lib")

local PIPELINE = [[
set { streamName = var("stream", "p") }
local o = { uri = var "source_uri", tables = var "tables", chunkSize = vars.chunkSize, maxTxnRows = vars.maxTxnRows }
local so = { checkpointLocation = var "cp" }
for _, k in ipairs({ "flushInterval", "duration", "maxSqlLength", "sendSqlTimeout" }) do so[k] = vars[k] end
save.append((var("kind", "binlog") == "snapshot" and load.snapshot or load.binlog)(o), var "sink_uri", so)
]]

mdb.describe("sink options (issue 9)", function()
  local src, sink, dir, script
  setup(function()
    src = mdb.start({ name = "skopt-source", binlog = true })
    sink = mdb.start({ name = "skopt-sink" })
    dir = cli.tmpdir()
    script = dir .. "/p.lua"
    local f = assert(io.open(script, "w"))
    f:write(PIPELINE)
    f:close()
    sink:sql("SET GLOBAL log_output = 'TABLE'")
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  local function args(name, tables, sets, once)
    local a = { "run", script, "--set", "source_uri=" .. src.uri, "--set", "sink_uri=" .. sink.uri,
      "--set", "tables=" .. tables, "--set", "cp=" .. dir .. "/" .. name, "--set", "stream=" .. name }
    for k, v in pairs(sets or {}) do a[#a + 1] = "--set" a[#a + 1] = k .. "=" .. tostring(v) end
    if once ~= false then a[#a + 1] = "--once" end
    return a
  end
  local function run(...)
    local rc, _, err = cli.run(args(...))
    assert.equals(0, rc, err)
  end
  -- the sink's general log while fn runs: { {event_time (s), argument}, ... } of Query commands
  local function logged(fn)
    sink:sql("SET GLOBAL general_log = 0; TRUNCATE mysql.general_log; SET GLOBAL general_log = 1")
    fn()
    sink:sql("SET GLOBAL general_log = 0")
  end
  local function count(like)
    return tonumber(sink:rows("SELECT COUNT(*) FROM mysql.general_log WHERE command_type = 'Query' AND argument LIKE '" ..
      like .. "'")[1][1])
  end
  local function longest(like)
    return tonumber(sink:rows("SELECT MAX(LENGTH(argument)) FROM mysql.general_log WHERE command_type = 'Query' " ..
      "AND argument LIKE '" .. like .. "'")[1][1])
  end

  it("maxSqlLength: default the smaller of 4 MiB and max_allowed_packet, or the given byte count", function()
    src:sql("CREATE DATABASE ms; CREATE TABLE ms.t (id INT PRIMARY KEY, pad VARCHAR(9000)); INSERT INTO ms.t VALUES (0, 'x');")
    local n = 0
    -- one source transaction of `rows` rows of 8000 bytes, applied by the binlog path
    local function change(rows)
      src:sql(string.format("INSERT INTO ms.t SELECT seq, REPEAT(CHAR(97 + seq %% 26), 8000) FROM seq_%d_to_%d",
        n + 1, n + rows), "ms")
      n = n + rows
    end
    local function case(name, sets, rows)
      run(name, "ms.t:" .. name .. ".t", sets)
      logged(function()
        change(rows)
        run(name, "ms.t:" .. name .. ".t", sets)
      end)
      assert.equals(tostring(n + 1), sink:rows("SELECT COUNT(*) FROM " .. name .. ".t")[1][1])
      return longest("%INTO `" .. name .. "`.`t`%")
    end
    -- max_allowed_packet 64 MiB: 4 MiB statements (12 MB of rows)
    local l = case("ms4m", {}, 1500)
    assert.is_true(l <= 4 * 1024 * 1024 and l > 3 * 1024 * 1024, "longest statement " .. l)
    -- max_allowed_packet 1 MiB (new connections): 1 MiB statements
    sink:sql("SET GLOBAL max_allowed_packet = 1048576")
    local ok, e = pcall(case, "ms1m", {}, 400)
    sink:sql("SET GLOBAL max_allowed_packet = 67108864")
    assert(ok, e)
    l = e
    assert.is_true(l < 1024 * 1024 and l > 900 * 1024, "longest statement " .. l)
    -- given: 65536
    l = case("ms64k", { maxSqlLength = 65536 }, 100)
    assert.is_true(l <= 65536 and l > 50000, "longest statement " .. l)
  end)

  it("maxSqlLength: the default is a statement the sink accepts (max_allowed_packet - 2 bytes)", function()
    local mysql_sink = require("mocdc.sink.mysql")
    local errors = require("mocdc.errors")
    sink:sql("SET GLOBAL max_allowed_packet = 1048576")
    local ok, e = pcall(function()
      local s = mysql_sink.open(sink.uri, { pipeline = "edge" })
      local function query_of(len)
        local head = "SELECT LENGTH('"
        return s.c:query(head .. string.rep("x", len - #head - 2) .. "')")
      end
      local rows, err = query_of(s.max_sql)
      local _, err2, code2 = query_of(s.max_sql + 1)
      s:close()
      assert.is_table(rows, tostring(err))
      -- refused: the server answers 1153 and drops the connection, which the client may see first (2006)
      assert.is_true(code2 == 1153 or code2 == 2006, tostring(code2) .. " " .. tostring(err2))
      assert.equals(1048574, s.max_sql)
      -- a given maxSqlLength the sink would refuse: one line, exit 2
      local okg, eg = pcall(mysql_sink.open, sink.uri, { pipeline = "edge", maxSqlLength = 1048576 })
      assert.is_false(okg)
      assert.equals(2, eg.code)
      assert.equals("maxSqlLength 1048576 is larger than the sink's max_allowed_packet 1048576 allows (statements " ..
        "of at most 1048574 bytes); lower it or raise max_allowed_packet", errors.message(eg))
    end)
    sink:sql("SET GLOBAL max_allowed_packet = 67108864")
    assert(ok, e)
  end)

  it("flushInterval / duration: seconds between sink commits while the stream is busy", function()
    src:sql("CREATE DATABASE fi; CREATE TABLE fi.t (id INT PRIMARY KEY, pad CHAR(60)); INSERT INTO fi.t VALUES (0, 'x');")
    local n = 0
    local function case(name, opt)
      local sets = { [opt] = 0.5, maxTxnRows = 100000000 }
      run(name, "fi.t:" .. name .. ".t", sets)
      -- a backlog of 150 source transactions of 8000 rows: the stream is busy while it is applied
      local stmts = {}
      for _ = 1, 150 do
        stmts[#stmts + 1] = string.format("INSERT INTO fi.t SELECT seq, 'p' FROM seq_%d_to_%d;", n + 1, n + 8000)
        n = n + 8000
      end
      src:sql(table.concat(stmts, "\n"), "fi")
      logged(function() run(name, "fi.t:" .. name .. ".t", sets) end)
      assert.equals(tostring(n + 1), sink:rows("SELECT COUNT(*) FROM " .. name .. ".t")[1][1])
      local r = sink:rows("SELECT UNIX_TIMESTAMP(event_time) FROM mysql.general_log WHERE command_type = 'Query' " ..
        "AND argument LIKE 'REPLACE INTO `mocdc`.`watermark`%' ORDER BY event_time")
      -- while busy a sink transaction stays open 0.5 s (the default is 0.2 s); the last commit is the
      -- one at the end of the backlog
      local gaps = {}
      for i = 2, #r - 1 do gaps[#gaps + 1] = string.format("%.2f", tonumber(r[i][1]) - tonumber(r[i - 1][1])) end
      io.stderr:write(string.format("\n%s = 0.5: %d commits, gaps %s s\n", opt, #r, table.concat(gaps, " ")))
      assert.is_true(#gaps >= 1, name .. ": " .. #r .. " commits")
      for _, g in ipairs(gaps) do
        assert.is_true(tonumber(g) >= 0.45, name .. ": commits apart by " .. table.concat(gaps, " ") .. " s")
      end
    end
    case("fi1", "flushInterval")
    case("fi2", "duration")
  end)

  it("sendSqlTimeout: a sink statement that waits longer fails after that many seconds", function()
    src:sql("CREATE DATABASE st; CREATE TABLE st.t (id INT PRIMARY KEY, v INT); INSERT INTO st.t VALUES (1, 1);")
    run("st", "st.t:sts.t", { sendSqlTimeout = 2 })
    -- a sink transaction holds the row: mocdc's update waits for the lock (innodb_lock_wait_timeout 50 s)
    local locker = assert(conn.open(sink.uri, { role = "sink" }))
    assert(locker:exec("BEGIN"))
    assert(locker:query("SELECT * FROM sts.t WHERE id = 1 FOR UPDATE"))
    src:sql("UPDATE st.t SET v = 2 WHERE id = 1")
    local logf = dir .. "/st.log"
    local t0 = util.mono()
    local pid = cli.spawn(args("st", "st.t:sts.t", { sendSqlTimeout = 2 }), logf)
    local line = cli.eventually(function()
      local s = io.open(logf):read("*a")
      return s:match("[^\n]*Lost connection[^\n]*") or s:match("[^\n]*timeout[^\n]*")
    end, 20, "the sink statement timing out")
    local took = util.mono() - t0
    io.stderr:write(string.format("\nsendSqlTimeout = 2: gave up after %.2f s: %s\n", took, line))
    locker:exec("ROLLBACK")
    locker:close()
    assert.is_true(cli.wait(pid, 60), "mocdc run still running")
    assert.is_true(took >= 1.8 and took < 8, string.format("timed out after %.2f s: %s", took, line))
    assert.truthy(line:find("writing to sts.t failed: Lost connection to server during query (error 2013); " ..
      "sendSqlTimeout = 2 s cuts off a statement the sink has not answered by then (raise it if statements take " ..
      "that long)", 1, true), line)
  end)

  it("chunkSize: rows per sink transaction of the full copy, 100000 by default", function()
    src:sql("CREATE DATABASE cs; CREATE TABLE cs.t (id INT PRIMARY KEY, v INT)")
    src:sql("INSERT INTO cs.t SELECT seq, seq FROM seq_1_to_250000", "cs")
    local function loads(name, sets)
      sets.kind = "snapshot"
      logged(function() run(name, "cs.t:" .. name .. ".t", sets) end)
      assert.equals("250000", sink:rows("SELECT COUNT(*) FROM " .. name .. ".t")[1][1])
      return count("LOAD DATA LOCAL INFILE%`" .. name .. "`.`t`%"), count("COMMIT")
    end
    local l, c = loads("cs1", {})
    assert.equals(3, l)
    assert.is_true(c >= 3, "commits " .. c)
    l, c = loads("cs2", { chunkSize = 60000 })
    assert.equals(5, l)
    assert.is_true(c >= 5, "commits " .. c)
  end)
end)
