-- Issue 9 defect 3: `mocdc run` (binlog pipeline, not --once) survives a sink
-- or source server SIGKILLed mid-stream and restarted ~5 s later: the same
-- process retries with backoff (mocdc.pipeline.retry), reconnects, resumes from the
-- sink's watermark and converges: nothing lost (source == sink), nothing
-- applied twice (a trigger on the sink counts every committed row write).
-- Also a sink killed while the full copy is in progress.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local util = require("mocdc.util.lib")

local eventually = cli.eventually

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function count_matches(s, pat)
  local n = 0
  for _ in (s or ""):gmatch(pat) do n = n + 1 end
  return n
end

mdb.describe("issue 9: mocdc run survives a sink or source restart", function()
  local src, sink, home
  local pids = {} -- the mocdc and workload processes this file started
  setup(function()
    src = mdb.start({ name = "rs-source", binlog = true })
    sink = mdb.start({ name = "rs-sink" })
    home = cli.tmpdir()
  end)
  before_each(function() -- a failed test may have left a server down
    if not src:running() then src:start_again() end
    if not sink:running() then sink:start_again() end
  end)
  teardown(function()
    for _, pid in ipairs(pids) do
      if cli.alive(pid) then
        util.kill(pid, 15)
        if not cli.wait(pid, 20) then util.kill(pid, 9) end
      end
    end
    if os.getenv("MOCDC_TEST_KEEP") then os.execute("cat " .. home .. "/*.log >&2") end
    os.execute("rm -rf " .. home)
  end)

  -- Background workload: `txns` transactions of 10 inserted rows each into
  -- db.t (ids 1..10*txns), retried until they commit (INSERT IGNORE: a
  -- commit whose reply was lost is not doubled); the number committed so far
  -- in <name>.progress, <name>.done at the end.
  local function workload(name, db, txns)
    local sh = home .. "/" .. name .. ".sh"
    local f = assert(io.open(sh, "w"))
    f:write(string.format([[
i=1
while [ $i -le %d ]; do
  a=$(( (i - 1) * 10 + 1 )); b=$(( i * 10 ))
  if MYSQL_PWD=%s mariadb --no-defaults --protocol=TCP -h127.0.0.1 -P%d -uroot --connect-timeout=2 %s -e "
      INSERT IGNORE INTO t SELECT seq, MD5(seq), seq * 3 FROM seq_${a}_to_${b}" >/dev/null 2>&1; then
    echo $i > %s/%s.progress
    i=$((i + 1))
    sleep 0.03
  else
    sleep 0.2
  fi
done
touch %s/%s.done
]], txns, mdb.PASSWORD, src.port, db, home, name, home, name))
    f:close()
    local p = io.popen("sh " .. sh .. " >/dev/null 2>&1 </dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- & echo $!")
    local pid = tonumber(p:read("*a"))
    p:close()
    pids[#pids + 1] = pid
    return pid
  end

  local function progress(name) return tonumber(read(home .. "/" .. name .. ".progress") or "0") or 0 end

  -- source db.t and sink sdb.t (with the audit trigger) created up front
  local function tables(db, sdb)
    src:sql(string.format("CREATE DATABASE %s; CREATE TABLE %s.t (id INT PRIMARY KEY, v VARCHAR(32), n BIGINT);",
      db, db))
    sink:sql(string.format([[CREATE DATABASE %s; CREATE TABLE %s.t (id INT PRIMARY KEY, v VARCHAR(32), n BIGINT);
      CREATE TABLE %s.audit (id INT NOT NULL);
      CREATE TRIGGER %s.t_ins BEFORE INSERT ON %s.t FOR EACH ROW INSERT INTO %s.audit VALUES (NEW.id);]],
      sdb, sdb, sdb, sdb, sdb, sdb))
  end

  local function sink_count(sdb) return tonumber(sink:rows("SELECT COUNT(*) FROM " .. sdb .. ".t")[1][1]) end

  local function run_mocdc(name, pipeline, db, sdb)
    local log = home .. "/" .. name .. ".log"
    local pid = cli.spawn({ "run", pipeline, "--set", "source_uri=" .. src.uri, "--set", "sink_uri=" .. sink.uri,
      "--set", "tables=" .. db .. ".t:" .. sdb .. ".t", "--set", "checkpoint=" .. home .. "/" .. name .. "-cp" },
      log, { env = { MOCDC_HOME = home } })
    pids[#pids + 1] = pid
    return pid, log
  end

  -- the end state: the workload committed all it meant to, the sink equals the
  -- source, every row written once, and the same mocdc process is still running
  local function converged(name, db, sdb, rows, pid, log)
    eventually(function() return read(home .. "/" .. name .. ".done") end, 90, "the workload to finish")
    local q = "SELECT COUNT(*), COUNT(DISTINCT id), MIN(id), MAX(id), SUM(CRC32(CONCAT_WS('#', id, v, n))) FROM "
    local want = src:rows(q .. db .. ".t")
    assert.same({ tostring(rows), tostring(rows), "1", tostring(rows) },
      { want[1][1], want[1][2], want[1][3], want[1][4] })
    eventually(function()
      local got = sink:rows(q .. sdb .. ".t")
      return got[1][1] == want[1][1] and got[1][5] == want[1][5]
    end, 90, "the sink to match the source")
    assert.same(src:rows(q .. db .. ".t"), sink:rows(q .. sdb .. ".t"))
    assert.same({ { tostring(rows), tostring(rows) } },
      (sink:rows("SELECT COUNT(*), COUNT(DISTINCT id) FROM " .. sdb .. ".audit")))
    assert.is_true(cli.alive(pid), "mocdc run exited:\n" .. (read(log) or ""))
    local text = read(log)
    assert.matches("WARN retry 1/10 in 0.2 s after: ", text, 1, true)
    assert.matches("recovered after %d+ retr", text)
    assert.not_matches("taking over from", text, 1, true) -- reconnecting is not a takeover of itself
    assert.not_matches(mdb.PASSWORD, text, 1, true)
    util.kill(pid, 15)
    assert.is_true(cli.wait(pid, 30), "mocdc run stopped on SIGTERM")
  end

  it("the sink SIGKILLed mid-stream and restarted 5 s later: mocdc run retries and converges", function()
    tables("rs1", "rs1_sink")
    local pid, log = run_mocdc("sink", "pipelines/binlog_to_mysql.lua", "rs1", "rs1_sink")
    eventually(function() return (read(log) or ""):find("streaming binlog from", 1, true) end, 30, "streaming")
    workload("sink", "rs1", 200)
    local before = eventually(function()
      local n = sink_count("rs1_sink")
      return n >= 100 and n
    end, 60, "the first changes on the sink")
    sink:kill()
    -- the kill landed mid-work: the sink had some rows, the workload was not done
    assert.is_true(before > 0 and before < 2000, "sink rows at the kill: " .. before)
    assert.is_true(progress("sink") < 200, "workload committed " .. progress("sink") .. " of 200 at the kill")
    eventually(function() return count_matches(read(log), "WARN retry %d+/10") >= 2 end, 30, "retries while the sink is down")
    assert.is_true(cli.alive(pid), "mocdc run exited after the sink was killed:\n" .. (read(log) or ""))
    util.sleep(5) -- the outage
    sink:start_again()
    assert.is_true(sink_count("rs1_sink") < 2000, "the sink was behind at the restart")
    converged("sink", "rs1", "rs1_sink", 2000, pid, log)
  end)

  it("the source SIGKILLed mid-stream and restarted 5 s later: mocdc run retries and converges", function()
    tables("rs2", "rs2_sink")
    local pid, log = run_mocdc("source", "pipelines/binlog_to_mysql.lua", "rs2", "rs2_sink")
    eventually(function() return (read(log) or ""):find("streaming binlog from", 1, true) end, 30, "streaming")
    workload("source", "rs2", 200)
    local before = eventually(function()
      local n = sink_count("rs2_sink")
      return n >= 100 and n
    end, 60, "the first changes on the sink")
    src:kill()
    assert.is_true(before > 0 and before < 2000, "sink rows at the kill: " .. before)
    assert.is_true(progress("source") < 200, "workload committed " .. progress("source") .. " of 200 at the kill")
    eventually(function() return count_matches(read(log), "WARN retry %d+/10") >= 2 end, 30, "retries while the source is down")
    assert.is_true(cli.alive(pid), "mocdc run exited after the source was killed:\n" .. (read(log) or ""))
    util.sleep(5) -- the outage
    src:start_again()
    converged("source", "rs2", "rs2_sink", 2000, pid, log)
  end)

  it("a stream another run took over while this one was reconnecting: the retrying run stops, it does not take it back", function()
    tables("rs4", "rs4_sink")
    src:sql("INSERT INTO rs4.t VALUES (1, 'a', 1)")
    local pid, log = run_mocdc("old", "pipelines/binlog_to_mysql.lua", "rs4", "rs4_sink")
    eventually(function() return sink_count("rs4_sink") == 1 end, 30, "the first run copying")
    sink:kill()
    src:sql("INSERT INTO rs4.t VALUES (2, 'b', 2)") -- a change to write: the first run meets the dead sink
    -- retry 6 waits 6.4 s: time for a second run to take the stream over
    eventually(function() return (read(log) or ""):find("WARN retry 6/10 in 6.4 s", 1, true) end, 30, "six retries")
    sink:start_again()
    src:sql("INSERT INTO rs4.t VALUES (3, 'c', 3)")
    local rc, _, err = cli.run({ "run", "pipelines/binlog_to_mysql.lua", "--once", "--set", "source_uri=" .. src.uri,
      "--set", "sink_uri=" .. sink.uri, "--set", "tables=rs4.t:rs4_sink.t", "--set", "checkpoint=" .. home .. "/new-cp" },
      { env = { MOCDC_HOME = home } })
    assert.equals(0, rc, err)
    assert.equals(3, sink_count("rs4_sink"))
    eventually(function() return not cli.alive(pid) or cli.wait(pid, 0.1) end, 30, "the first run to stop")
    local text = read(log)
    assert.matches("mocdc: error: stream 'binlog_to_mysql' on sink root@127%.0%.0%.1:%d+ was taken over by mocdc pid %d+ " ..
      "on host [^\n]* %(writer epoch %d+, this run had %d+%) while this run was reconnecting: it stops without writing " ..
      "more; a stream has one writer\n$", text)
    assert.not_matches("retry 7/", text, 1, true)
  end)

  it("the sink SIGKILLed during the full copy: the copy resumes from its last chunk and converges", function()
    local rows = 300000
    src:sql(string.format([[CREATE DATABASE rs3; CREATE TABLE rs3.t (id INT PRIMARY KEY, v VARCHAR(32), n BIGINT);
      USE rs3; INSERT INTO rs3.t SELECT seq, MD5(seq), seq * 3 FROM seq_1_to_%d;]], rows))
    sink:sql([[CREATE DATABASE rs3_sink; CREATE TABLE rs3_sink.t (id INT PRIMARY KEY, v VARCHAR(32), n BIGINT);
      CREATE TABLE rs3_sink.audit (id INT NOT NULL);
      CREATE TRIGGER rs3_sink.t_ins BEFORE INSERT ON rs3_sink.t FOR EACH ROW INSERT INTO rs3_sink.audit VALUES (NEW.id);]])
    -- small chunks: many sink transactions, so the kill lands between two of them
    local pipeline = home .. "/copy_pipeline.lua"
    local f = assert(io.open(pipeline, "w"))
    f:write([[
set { streamName = "rs_copy" }
local changes = load.binlog { uri = var("source_uri"), tables = var("tables"), chunkSize = 2000, batchSize = 2000 }
save.append(changes, var("sink_uri"), { checkpointLocation = var("checkpoint") })
]])
    f:close()
    local pid, log = run_mocdc("copy", pipeline, "rs3", "rs3_sink")
    local before = eventually(function()
      local n = sink_count("rs3_sink")
      return n >= 4000 and n
    end, 60, "the copy under way")
    sink:kill()
    assert.is_true(before < rows, "the copy had finished before the kill (" .. before .. " rows)")
    assert.is_nil((read(log) or ""):find("full copy rs3.t", 1, true), "the copy had finished before the kill")
    eventually(function() return count_matches(read(log), "WARN retry %d+/10") >= 2 end, 30, "retries while the sink is down")
    util.sleep(5) -- the outage
    sink:start_again()
    eventually(function() return (read(log) or ""):find("resuming full copy after key", 1, true) end, 60, "the copy resumed")
    eventually(function() return (read(log) or ""):find("full copy rs3.t", 1, true) end, 90, "the copy finished")
    -- then streaming: a change after the copy arrives by the binlog
    src:sql("INSERT INTO rs3.t VALUES (" .. (rows + 1) .. ", 'late', 1)")
    os.execute("touch " .. home .. "/copy.done")
    converged("copy", "rs3", "rs3_sink", rows + 1, pid, log)
  end)
end)
