-- Issue 9, defect 9: a stream has one writer. Two runs of one pipeline used to
-- apply every change twice (a keyless table ended with 102 rows for 52). A
-- second run with the same checkpointLocation is refused naming the first; a
-- second run with another checkpointLocation takes the stream over and the
-- first one's next sink transaction fails.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local cjson = require("cjson")
local util = require("mocdc.util.lib")

mdb.describe("issue 9: one writer per stream", function()
  local src, sink, home
  setup(function()
    src = mdb.start({ name = "i9ow-source", binlog = true })
    sink = mdb.start({ name = "i9ow-sink" })
    home = cli.tmpdir()
  end)
  teardown(function() os.execute("rm -rf " .. home) end)

  local pids = {}
  after_each(function()
    for _, pid in ipairs(pids) do
      if cli.alive(pid) then util.kill(pid, 9) cli.wait(pid, 10) end
    end
    pids = {}
  end)

  local function fresh()
    src:sql([[DROP DATABASE IF EXISTS d; CREATE DATABASE d; CREATE TABLE d.nk (a INT, b VARCHAR(10));
      INSERT INTO d.nk VALUES (1, 'x'), (2, 'y');]])
    sink:sql("DROP DATABASE IF EXISTS d2; DROP DATABASE IF EXISTS mocdc")
  end

  local function args(cp, once)
    local a = { "run", "pipelines/binlog_to_mysql.lua", "--set", "source_uri=" .. src.uri, "--set", "sink_uri=" .. sink.uri,
      "--set", "tables=d.nk:d2.nk", "--set", "checkpoint=" .. home .. "/" .. cp }
    if once then a[#a + 1] = "--once" end
    return a
  end
  local function read(path)
    local f = io.open(path, "rb")
    if not f then return "" end
    local s = f:read("*a")
    f:close()
    return s
  end
  -- start a run in the background: its pid (the mocdc process itself); its exit
  -- code lands in <log>.rc
  local function spawn(cp, logname)
    local log = home .. "/" .. logname
    local parts = { "MOCDC_HOME=" .. cli.q(home), cli.q(cli.exe) }
    for _, a in ipairs(args(cp)) do parts[#parts + 1] = cli.q(a) end
    local script = table.concat(parts, " ") .. " >>" .. cli.q(log) .. " 2>&1 </dev/null & echo $! >" ..
      cli.q(log .. ".pid") .. "; wait $!; echo $? >" .. cli.q(log .. ".rc")
    os.execute("sh -c " .. cli.q(script) .. " >/dev/null 2>&1 </dev/null &")
    local pid = cli.eventually(function() return tonumber(read(log .. ".pid")) end, 10, "the pid of " .. logname)
    pids[#pids + 1] = pid
    return pid
  end
  local function exit_code(logname)
    return cli.eventually(function() return tonumber(read(home .. "/" .. logname .. ".rc")) end, 30,
      "the exit of " .. logname)
  end
  local function count() return tonumber(sink:rows("SELECT COUNT(*) FROM d2.nk")[1][1]) end
  -- the sink's watermark of d.nk has reached the source's current binlog position
  local function caught_up()
    local ms = src:rows("SHOW MASTER STATUS")[1]
    local r = sink:rows("SELECT position FROM mocdc.watermark WHERE source_table = 'd.nk' AND phase = 'cdc'")[1]
    if not r then return false end
    local p = cjson.decode(r[1])
    return p.file == ms[1] and p.pos >= tonumber(ms[2])
  end
  local function insert(from, to)
    for i = from, to do src:sql(string.format("INSERT INTO d.nk VALUES (%d, 'r%d')", i, i)) end
  end

  it("refuses a second run with the same checkpointLocation, naming the running one", function()
    fresh()
    local a = spawn("same", "same-a.log")
    cli.eventually(function() return count() == 2 end, 30, "the first run's full copy")
    local rc, out, err = cli.run(args("same", true), { env = { MOCDC_HOME = home } })
    assert.equals(1, rc, err)
    assert.is_true(cli.one_line(err), err)
    local line = err:match("mocdc: error: [^\n]*")
    assert.matches("^mocdc: error: checkpointLocation " .. (home .. "/same"):gsub("%p", "%%%0") ..
      " is in use by mocdc pid " .. a .. " on host [^ ]+ %(since %d%d%d%d%-[%d%-T:.]+Z%): a stream has one writer; " ..
      "stop that run first, or give this one its own checkpointLocation$", line)
    assert.equals("", out)
    -- the first run goes on alone: every change once
    insert(3, 52)
    cli.eventually(caught_up, 30, "the first run to catch up")
    assert.equals(52, count())
    assert.is_true(cli.alive(a))
    util.kill(a, 15)
    assert.equals(130, exit_code("same-a.log")) -- SIGTERM: stopped at a safe point
    -- the lock goes with the process: the next run with that directory works
    src:sql("INSERT INTO d.nk VALUES (53, 'r53')")
    rc, _, err = cli.run(args("same", true), { env = { MOCDC_HOME = home } })
    assert.equals(0, rc, err)
    assert.equals(53, count())
  end)

  it("a second run with another checkpointLocation takes over; the first one's next commit fails", function()
    fresh()
    local a = spawn("a", "a.log")
    cli.eventually(function() return count() == 2 end, 30, "the first run's full copy")
    insert(3, 10)
    cli.eventually(caught_up, 30, "the first run to catch up")
    local b = spawn("b", "b.log")
    cli.eventually(function() return read(home .. "/b.log"):find("streaming binlog from", 1, true) end, 30,
      "the second run to stream")
    insert(11, 52)
    cli.eventually(caught_up, 30, "the second run to catch up")
    -- every change once (both runs applied 11..52 before: 94 rows)
    assert.equals(52, count())
    local q = "SELECT a, b, COUNT(*) FROM %s GROUP BY a, b ORDER BY a"
    assert.same(src:rows(q:format("d.nk")), sink:rows(q:format("d2.nk")))
    assert.equals(1, exit_code("a.log"))
    local alog = read(home .. "/a.log")
    local line = alog:match("mocdc: error: [^\n]*")
    assert.is_not_nil(line, alog)
    assert.matches("^mocdc: error: stream 'binlog_to_mysql' on sink [^ ]+ was taken over by mocdc pid " .. b ..
      " on host [^\n]* %(writer epoch 2, this run had 1%): this run stops without writing more; a stream has one " ..
      "writer — stop the other run before starting this one again$", line)
    assert.not_matches("traceback", alog)
    assert.matches("WARN stream 'binlog_to_mysql' on sink [^\n]* taking over from mocdc pid " .. a ..
      " on host [^\n]*checkpointLocation " .. (home .. "/a"):gsub("%p", "%%%0"), read(home .. "/b.log"))
    assert.is_true(cli.alive(b))
    util.kill(b, 15)
    assert.equals(130, exit_code("b.log"))
    -- a clean stop releases the stream: the next run claims it without a takeover
    src:sql("INSERT INTO d.nk VALUES (53, 'r53')")
    local rc, _, err = cli.run(args("a", true), { env = { MOCDC_HOME = home } })
    assert.equals(0, rc, err)
    assert.not_matches("taking over", err)
    assert.equals(53, count())
  end)
end)
