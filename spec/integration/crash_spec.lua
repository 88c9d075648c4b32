-- Issue 3 crash test: under a continuous insert/update/delete workload, mocdc
-- is killed with SIGKILL at random moments 20 times and restarted; once the
-- workload stops and mocdc catches up, source and sink are identical.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local util = require("mocdc.util.lib")

mdb.describe("crash test: kill -9 twenty times under load (issue 3)", function()
  local src, sink, home
  setup(function()
    src = mdb.start({ name = "crash-source", binlog = true })
    sink = mdb.start({ name = "crash-sink" })
    home = cli.tmpdir()
  end)
  teardown(function() os.execute("rm -rf " .. home) end)

  it("converges to source == sink", function()
    src:sql([[CREATE DATABASE crash;
      CREATE TABLE crash.t (id INT PRIMARY KEY, v VARCHAR(64), n BIGINT, d DECIMAL(12,2), ts DATETIME(6));
      CREATE TABLE crash.u (a INT, b INT, c VARCHAR(20), PRIMARY KEY (a, b));
      USE crash;
      INSERT INTO crash.t SELECT seq, MD5(seq), seq, seq / 7, NOW(6) FROM seq_1_to_20000;
      INSERT INTO crash.u SELECT seq % 100, seq, 'x' FROM seq_1_to_2000;]])
    -- the workload: a shell loop of small transactions until a stop file appears
    local stop = home .. "/stop"
    local wl = home .. "/workload.sh"
    local f = assert(io.open(wl, "w"))
    f:write(string.format([[
i=0
while [ ! -f %s ]; do
  i=$((i+1))
  MYSQL_PWD=%s mariadb --no-defaults -h127.0.0.1 -P%d -uroot crash -e "
    SET @k = FLOOR(1 + RAND() * 25000), @k2 = FLOOR(1 + RAND() * 25000), @k3 = FLOOR(1 + RAND() * 25000);
    START TRANSACTION;
    INSERT INTO t VALUES (@k, MD5(RAND()), 1, RAND() * 1000, NOW(6)) ON DUPLICATE KEY UPDATE n = n + 1, v = MD5(RAND());
    UPDATE t SET n = n + 10, d = d + 1 WHERE id BETWEEN @k2 AND @k2 + 20;
    DELETE FROM t WHERE id = @k3;
    INSERT IGNORE INTO u VALUES (@k %% 100, @k, 'w$i');
    DELETE FROM u WHERE a = @k2 %% 100 AND b < @k2 LIMIT 3;
    UPDATE u SET b = b + 100000 WHERE a = @k3 %% 100 AND b = (SELECT MIN(b) FROM (SELECT b FROM u WHERE a = @k3 %% 100) x);
    COMMIT;" >/dev/null 2>&1
done
]], stop, mdb.PASSWORD, src.port))
    f:close()
    local p = io.popen("sh " .. wl .. " >/dev/null 2>&1 </dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- & echo $!")
    local wl_pid = tonumber(p:read("*a"))
    p:close()
    local args = { "run", "pipelines/binlog_to_mysql.lua", "--set", "source_uri=" .. src.uri, "--set", "sink_uri=" .. sink.uri,
      "--set", "tables=crash.t,crash.u", "--set", "checkpoint=" .. home .. "/cp" }
    local log = home .. "/mocdc.log"
    local kills = 0
    math.randomseed(os.time())
    for _ = 1, 20 do
      local pid = cli.spawn(args, log, { env = { MOCDC_HOME = home } })
      util.sleep(0.15 + math.random() * 1.2)
      if cli.alive(pid) then
        util.kill(pid, 9)
        kills = kills + 1
      end
      cli.wait(pid, 10)
    end
    os.execute("touch " .. stop)
    cli.wait(wl_pid, 30)
    local rc, _, err = cli.run({ args[1], args[2], args[3], args[4], args[5], args[6], args[7], args[8], args[9], args[10], "--once" },
      { env = { MOCDC_HOME = home } })
    assert.equals(0, rc, err)
    assert.is_true(kills >= 20, "killed " .. kills .. " times")
    for _, q in ipairs({
      "SELECT COUNT(*), SUM(CRC32(CONCAT_WS('#', id, v, n, d, ts))) FROM crash.t",
      "SELECT COUNT(*), SUM(CRC32(CONCAT_WS('#', a, b, c))) FROM crash.u",
    }) do
      assert.same(src:rows(q), sink:rows(q))
    end
    local n = tonumber(src:rows("SELECT COUNT(*) FROM crash.t")[1][1])
    assert.is_true(n > 1000)
  end)
end)
