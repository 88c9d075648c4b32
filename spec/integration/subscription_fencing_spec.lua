-- Issue 9: subscription fencing against a live but stale worker (README
-- "Subscriptions": owner + lsn re-checked inside each downstream transaction).
-- A worker is SIGSTOPped in the middle of an iteration (its rows written to
-- the downstream, not committed), its lease runs out, the other worker takes
-- the job over and completes the iteration; then the stale worker is resumed:
-- its commit must be refused, so a keyless table does not get the inserts twice.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local util = require("mocdc.util.lib")
local conn = require("mocdc.conn")

local eventually = cli.eventually

mdb.describe("subscriptions: a stale worker's commit is refused (issue 9)", function()
  local up, down, dir
  local workers = {}

  setup(function()
    up = mdb.start({ name = "fence-up" })
    down = mdb.start({ name = "fence-down" })
    dir = cli.tmpdir()
  end)
  teardown(function()
    for _, pid in pairs(workers) do
      if cli.alive(pid) then util.kill(pid, 18) util.kill(pid, 9) end
    end
    if os.getenv("MOCDC_TEST_KEEP") ~= "1" then os.execute("rm -rf " .. dir) end
  end)

  local function serve(owner)
    local pid = cli.spawn({ "serve", "--state-uri", down.uri, "--owner-id", owner, "--lease", "3", "--scan-interval", "1" },
      dir .. "/" .. owner .. ".log", { env = { MOCDC_HOME = dir } })
    workers[owner] = pid
    return pid
  end

  local function log_of(owner)
    local f = io.open(dir .. "/" .. owner .. ".log")
    local s = f and f:read("*a") or ""
    if f then f:close() end
    return s
  end

  local function rows_of(srv, tbl)
    return srv:rows("SELECT a, b, COUNT(*) FROM " .. tbl .. " GROUP BY a, b ORDER BY a, b")
  end
  local function same()
    local a, b = rows_of(up, "fz.nk"), rows_of(down, "fz.nk")
    if #a ~= #b then return false, #a .. " groups upstream, " .. #b .. " downstream" end
    for i = 1, #a do
      for j = 1, 3 do if a[i][j] ~= b[i][j] then return false, "group " .. i .. " differs" end end
    end
    return true
  end
  local function count(c, sql) return tonumber(assert(c:query(sql))[1][1]) end

  it("SIGSTOP past the lease, another worker takes over, SIGCONT: the stale commit is rolled back", function()
    up:sql("CREATE DATABASE fz")
    up:sql([[CREATE TABLE fz.nk (a INT, b VARCHAR(20));
      INSERT INTO fz.nk SELECT seq % 100, 'seed' FROM seq_1_to_5000;]], "fz")
    local rc, _, err = cli.run({ "sql", "--sink-uri", down.uri, "CREATE SUBSCRIPTION fz_sub DATABASE fz FROM '" ..
      up.uri .. "' SYNC_INTERVAL = 1" })
    assert.equals(0, rc, err)
    local pids = { A = serve("A"), B = serve("B") }
    eventually(same, 30, "the first sync")

    -- hold the workers' next INSERT into fz.nk on a table lock (reads go on)
    local locker = assert(conn.open(down.uri))
    assert(locker:exec("LOCK TABLES fz.nk READ"))
    up:sql("INSERT INTO fz.nk SELECT seq, 'new' FROM seq_1_to_300", "fz")
    local watch = assert(conn.open(down.uri))
    local job = eventually(function()
      local w = watch:query("SELECT COUNT(*) FROM information_schema.processlist WHERE command = 'Query' AND " ..
        "state = 'Waiting for table metadata lock' AND info LIKE 'INSERT INTO `fz`.`nk`%'")
      if tonumber(w[1][1]) ~= 1 then return nil end
      local r = watch:query("SELECT job_id, cn_uuid, iteration_lsn FROM mocdc.mo_sync_tasks WHERE table_name = 'nk' " ..
        "AND iteration_state = 'running'")
      return r[1] and { id = r[1][1], owner = r[1][2], lsn = tonumber(r[1][3]) }
    end, 30, "a worker's INSERT waiting for the table lock")
    local stale, other = job.owner, job.owner == "A" and "B" or "A"
    assert.is_truthy(pids[stale], "the job's owner is one of the workers: " .. tostring(stale))
    assert.is_true(util.kill(pids[stale], 19)) -- SIGSTOP
    assert(locker:exec("UNLOCK TABLES"))
    locker:close()
    -- the stale worker's rows are in the downstream, uncommitted
    assert(watch:exec("SET SESSION TRANSACTION ISOLATION LEVEL READ UNCOMMITTED"))
    eventually(function() return count(watch, "SELECT COUNT(*) FROM fz.nk") == 5300 end, 10,
      "the stopped worker's INSERT executed")
    assert.equals(5000, tonumber(down:rows("SELECT COUNT(*) FROM fz.nk")[1][1]))

    -- its lease runs out; the other worker takes the job over and completes the iteration
    eventually(function()
      local r = down:rows("SELECT cn_uuid, iteration_lsn, iteration_state FROM mocdc.mo_sync_tasks WHERE job_id = " .. job.id)
      return r[1][1] == other and tonumber(r[1][2]) > job.lsn and r[1][3] == "complete" and same()
    end, 30, "the other worker completing the iteration")
    assert.matches("subscription fz_sub: taking over fz.nk (lease expired)", log_of(other), 1, true)

    -- resumed, the stale worker reaches its commit: refused inside the transaction
    assert.is_true(util.kill(pids[stale], 18)) -- SIGCONT
    local fenced = "subscription fz_sub: job " .. job.id .. " %(fz%.nk%) was taken over %(owner " .. other ..
      ", lsn (%d+), state %a+%); this iteration is abandoned"
    local committed = eventually(function()
      local n = tonumber(down:rows("SELECT COUNT(*) FROM fz.nk")[1][1])
      if n ~= 5300 or log_of(stale):match(fenced) then return n end
    end, 30, "the stale worker's commit")
    -- nothing applied twice: the downstream has the 300 new rows once (also uncommitted: nothing pending)
    assert.equals(5300, committed)
    assert.is_true(same())
    assert.equals(5300, count(watch, "SELECT COUNT(*) FROM fz.nk"))
    assert.is_true(tonumber(log_of(stale):match(fenced)) > job.lsn)
    watch:close()

    -- both keep working afterwards
    up:sql("INSERT INTO fz.nk VALUES (7, 'later'), (7, 'later'); DELETE FROM fz.nk WHERE b = 'seed' AND a = 3 LIMIT 10",
      "fz")
    eventually(same, 30, "the next change")
    for _, w in ipairs({ "A", "B" }) do
      util.kill(pids[w], 15)
      assert.is_true(cli.wait(pids[w], 20), "worker " .. w .. " stops on SIGTERM")
    end
    assert.equals("4990", down:rows("SELECT COUNT(*) FROM fz.nk WHERE b = 'seed'")[1][1])
  end)

  it("a worker stopped while it holds its job's row lock (in its commit) does not stop the others", function()
    -- the server's lock wait, shortened so that a worker waiting for it would give up within the test
    down:sql("SET GLOBAL innodb_lock_wait_timeout = 4")
    up:sql([[CREATE TABLE fz.k2 (id INT PRIMARY KEY, v INT NOT NULL);
      INSERT INTO fz.k2 SELECT seq, seq FROM seq_1_to_200;]], "fz")
    local function same_k2()
      local a = up:rows("SELECT * FROM fz.k2 ORDER BY id")
      local ok, b = pcall(down.rows, down, "SELECT * FROM fz.k2 ORDER BY id")
      if not ok or #a ~= #b then return false end
      for i = 1, #a do if a[i][1] ~= b[i][1] or a[i][2] ~= b[i][2] then return false end end
      return true
    end
    local pids = { C = serve("C"), D = serve("D") }
    eventually(function() return same() and same_k2() end, 30, "the first sync of fz.k2")

    -- catch a worker in its fence (SELECT ... FOR UPDATE of its job row), stop it there: hold the
    -- workers after a claim (diff_state locked), then lock the job table and let them on to their fence
    local watch = assert(conn.open(down.uri))
    local function waiting(pattern)
      -- a table's or (CREATE DATABASE / TABLE IF NOT EXISTS under LOCK TABLES ... WRITE) the schema's
      local w = assert(watch:query("SELECT info FROM information_schema.processlist WHERE command = 'Query' AND " ..
        "state IN ('Waiting for table metadata lock', 'Waiting for schema metadata lock') AND info LIKE '" .. pattern .. "'"))
      return w
    end
    local l1, l2 = assert(conn.open(down.uri)), assert(conn.open(down.uri))
    assert(l1:exec("LOCK TABLES mocdc.diff_state WRITE"))
    eventually(function() return #waiting("%diff_state%") > 0 or #waiting("CREATE DATABASE IF NOT EXISTS `mocdc`") > 0 end,
      30, "a worker in an iteration")
    assert(l2:exec("LOCK TABLES mocdc.mo_sync_tasks READ"))
    assert(l1:exec("UNLOCK TABLES"))
    local job = eventually(function()
      local w = waiting("SELECT cn_uuid, iteration_lsn, iteration_state FROM %FOR UPDATE")
      local id = w[1] and w[1][1]:match("WHERE job_id = (%d+) FOR UPDATE")
      if not id then return nil end
      local r = watch:query("SELECT job_id, cn_uuid, table_name FROM mocdc.mo_sync_tasks WHERE job_id = " .. id ..
        " AND iteration_state = 'running'")
      return r[1] and { id = r[1][1], owner = r[1][2], table = r[1][3] }
    end, 30, "a worker's fence waiting for the table lock")
    local stale, other = job.owner, job.owner == "C" and "D" or "C"
    assert.is_truthy(pids[stale], "the job's owner is one of the workers: " .. tostring(stale))
    assert.is_true(util.kill(pids[stale], 19)) -- SIGSTOP
    assert(l2:exec("UNLOCK TABLES"))
    l1:close()
    l2:close()
    -- the stopped worker now holds the job's row lock
    eventually(function()
      local ok, err = watch:query("SELECT 1 FROM mocdc.mo_sync_tasks WHERE job_id = " .. job.id .. " FOR UPDATE NOWAIT")
      return ok == nil and tostring(err):find("Lock wait timeout", 1, true)
    end, 10, "the stopped worker holding its job's row lock")

    -- its lease runs out: the other worker cannot claim the job while it is locked, skips it, and goes on
    local skipped = "WARN subscription fz_sub: fz." .. job.table .. " is locked by another worker's commit in progress; " ..
      "skipped for now"
    eventually(function() return log_of(other):find(skipped, 1, true) end, 30, "the other worker skipping the locked job")
    local tbl = job.table == "nk" and "k2" or "nk"
    if tbl == "k2" then up:sql("UPDATE fz.k2 SET v = -v WHERE id <= 20", "fz")
    else up:sql("INSERT INTO fz.nk VALUES (8, 'meanwhile')", "fz") end
    eventually(function() return tbl == "k2" and same_k2() or tbl == "nk" and same() end, 30,
      "the other worker syncing fz." .. tbl .. " meanwhile")
    assert.is_true(cli.alive(pids[other]), "the other worker is still running")

    -- resumed, the stopped worker commits (it was the owner when it checked), then everything converges
    assert.is_true(util.kill(pids[stale], 18)) -- SIGCONT
    up:sql("UPDATE fz.k2 SET v = 0 WHERE id = 100; INSERT INTO fz.nk VALUES (9, 'after')", "fz")
    eventually(function() return same() and same_k2() end, 30, "convergence after SIGCONT")
    watch:close()
    for _, w in ipairs({ "C", "D" }) do
      util.kill(pids[w], 15)
      assert.is_true(cli.wait(pids[w], 20), "worker " .. w .. " stops on SIGTERM")
    end
    down:sql("SET GLOBAL innodb_lock_wait_timeout = 50")
  end)
end)
