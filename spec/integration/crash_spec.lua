-- Issue 3 crash test: under a continuous insert/update/delete workload, mocdc
-- is killed with SIGKILL at random moments 20 times and restarted; once the
-- workload stops and mocdc catches up, source and sink are identical.
-- Every kill lands while mocdc is streaming (it applied workload transactions in
-- that life, and the workload goes on after it); the workload's transactions all
-- commit and all reach the sink. MOCDC_TEST_SEED=<n> replays a run's kill timings
-- and keys (the seed is printed).
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local util = require("mocdc.util.lib")

mdb.describe("crash test: kill -9 twenty times under load (issue 3)", function()
  local src, sink, home, wl_pid
  local stop
  setup(function()
    src = mdb.start({ name = "crash-source", binlog = true })
    sink = mdb.start({ name = "crash-sink" })
    home = cli.tmpdir()
    stop = home .. "/stop"
  end)
  teardown(function()
    -- the workload loop must not outlive a failed assertion
    if stop then os.execute("touch " .. stop) end
    if wl_pid and not cli.wait(wl_pid, 30) then util.kill(wl_pid, 9) end
    if os.getenv("MOCDC_TEST_KEEP") ~= "1" then os.execute("rm -rf " .. home) end
  end)

  it("converges to source == sink", function()
    local seed = tonumber(os.getenv("MOCDC_TEST_SEED") or "") or (util.getpid() * 7919 + os.time()) % 1000000
    print("crash_spec: seed " .. seed .. " (MOCDC_TEST_SEED=" .. seed .. " replays it)")
    math.randomseed(seed)
    src:sql([[CREATE DATABASE crash;
      CREATE TABLE crash.t (id INT PRIMARY KEY, v VARCHAR(64), n BIGINT, d DECIMAL(12,2), ts DATETIME(6));
      CREATE TABLE crash.u (a INT, b INT, c VARCHAR(20), PRIMARY KEY (a, b));
      CREATE TABLE crash.wl (i INT PRIMARY KEY);
      USE crash;
      INSERT INTO crash.t SELECT seq, MD5(seq), seq, seq / 7, NOW(6) FROM seq_1_to_20000;
      INSERT INTO crash.u SELECT seq % 100, seq, 'x' FROM seq_1_to_2000;]])
    -- the workload: a loop of small transactions until the stop file appears; transaction i
    -- also inserts i into crash.wl, and is counted in `committed` once the client succeeded
    local wl = home .. "/workload.sh"
    local committed, wl_err = home .. "/committed", home .. "/workload.err"
    local f = assert(io.open(wl, "w"))
    f:write(string.format([[
RANDOM=%d
i=0
while [ ! -f %s ]; do
  i=$((i+1))
  k=$((RANDOM %% 25000 + 1)) k2=$((RANDOM %% 25000 + 1)) k3=$((RANDOM %% 25000 + 1))
  MYSQL_PWD=%s mariadb --no-defaults -h127.0.0.1 -P%d -uroot crash -e "
    SET @k = $k, @k2 = $k2, @k3 = $k3;
    START TRANSACTION;
    INSERT INTO wl VALUES ($i);
    INSERT INTO t VALUES (@k, MD5(RAND()), 1, RAND() * 1000, NOW(6)) ON DUPLICATE KEY UPDATE n = n + 1, v = MD5(RAND());
    UPDATE t SET n = n + 10, d = d + 1 WHERE id BETWEEN @k2 AND @k2 + 20;
    DELETE FROM t WHERE id = @k3;
    INSERT IGNORE INTO u VALUES (@k %% 100, @k, 'w$i');
    DELETE FROM u WHERE a = @k2 %% 100 AND b < @k2 LIMIT 3;
    UPDATE IGNORE u SET b = b + 100000 WHERE a = @k3 %% 100 AND b = (SELECT MIN(b) FROM (SELECT b FROM u WHERE a = @k3 %% 100) x);
    COMMIT;" >/dev/null 2>>%s || { echo "transaction $i failed" >>%s; break; }
  echo $i >%s
done
]], seed % 32768, stop, mdb.PASSWORD, src.port, wl_err, wl_err, committed))
    f:close()
    local p = io.popen("bash " .. wl .. " >/dev/null 2>&1 </dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- & echo $!")
    wl_pid = tonumber(p:read("*a"))
    p:close()
    local args = { "run", "pipelines/binlog_to_mysql.lua", "--set", "source_uri=" .. src.uri, "--set", "sink_uri=" .. sink.uri,
      "--set", "tables=crash.t,crash.u,crash.wl", "--set", "checkpoint=" .. home .. "/cp" }
    local log = home .. "/mocdc.log"
    local function applied() -- the last workload transaction the sink has
      return tonumber(sink:rows("SELECT COALESCE(MAX(i), 0) FROM crash.wl")[1][1])
    end
    local function source_committed()
      return tonumber(src:rows("SELECT COALESCE(MAX(i), 0) FROM crash.wl")[1][1])
    end
    local function workload_errors()
      local fe = io.open(wl_err)
      if not fe then return "" end
      local s = fe:read("*a")
      fe:close()
      return s
    end
    local at_kill = 0
    for life = 1, 20 do
      local pid = cli.spawn(args, log, { env = { MOCDC_HOME = home } })
      -- this life applies workload transactions past the previous kill's...
      local ok, err = pcall(cli.eventually, function() return applied() > at_kill end, 60,
        "life " .. life .. " to apply a workload transaction past #" .. at_kill)
      -- ...then is killed at a random moment while the workload goes on
      if ok then util.sleep(math.random() * 0.5) end
      local alive = cli.alive(pid)
      util.kill(pid, 9)
      assert(cli.wait(pid, 10), "mocdc still running after SIGKILL")
      assert(ok, err)
      assert.is_true(alive, "life " .. life .. " was running when killed (see " .. log .. ")")
      at_kill = applied()
      assert.equals("", workload_errors())
    end
    local before_stop = source_committed()
    assert.is_true(before_stop > at_kill, "the workload went on after the last kill")
    os.execute("touch " .. stop)
    assert.is_true(cli.wait(wl_pid, 30), "workload loop ended")
    wl_pid = nil
    local rc, _, err = cli.run({ args[1], args[2], args[3], args[4], args[5], args[6], args[7], args[8], args[9], args[10], "--once" },
      { env = { MOCDC_HOME = home } })
    assert.equals(0, rc, err)
    -- the workload committed every transaction it ran, without an error
    assert.equals("", workload_errors())
    local fc = assert(io.open(committed))
    local n_committed = tonumber(fc:read("*a"))
    fc:close()
    assert.is_true(n_committed >= before_stop)
    assert.same({ { tostring(n_committed), tostring(n_committed) } },
      src:rows("SELECT COUNT(*), MAX(i) FROM crash.wl"))
    for _, q in ipairs({
      "SELECT COUNT(*), SUM(CRC32(CONCAT_WS('#', id, v, n, d, ts))) FROM crash.t",
      "SELECT COUNT(*), SUM(CRC32(CONCAT_WS('#', a, b, c))) FROM crash.u",
      "SELECT COUNT(*), SUM(i) FROM crash.wl",
    }) do
      assert.same(src:rows(q), sink:rows(q))
    end
  end)
end)
