-- Issue 5 step 3: subscriptions (seed 003) with MariaDB upstream and
-- downstream: CREATE/SHOW/DROP SUBSCRIPTION through `mocdc sql`, `mocdc serve`
-- workers syncing a whole database, new / truncated / re-created / dropped /
-- altered upstream tables, and two workers on one downstream with one killed
-- mid-iteration (nothing doubled, the survivor takes over).
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local util = require("mocdc.util.lib")

local eventually = cli.eventually

mdb.describe("subscriptions (issue 5)", function()
  local up, down, dir
  local workers = {}

  setup(function()
    up = mdb.start({ name = "sub-up" })
    down = mdb.start({ name = "sub-down" })
    dir = cli.tmpdir()
    up:sql("CREATE DATABASE tpcc")
  end)
  teardown(function()
    for _, pid in pairs(workers) do if cli.alive(pid) then util.kill(pid, 9) end end
    if os.getenv("MOCDC_TEST_KEEP") ~= "1" then os.execute("rm -rf " .. dir) end
  end)

  local function sql(stmt, ...)
    local args = { "sql", "--sink-uri", down.uri, stmt }
    for _, a in ipairs({ ... }) do args[#args + 1] = a end
    return cli.run(args)
  end

  local exit_of = {} -- pid -> rc() of that background run
  local function serve(owner)
    local pid, rc_of = cli.spawn_rc({ "serve", "--state-uri", down.uri, "--owner-id", owner, "--lease", "3", "--scan-interval", "1",
      "--batch-size", "200", "--chunk-rows", "500" }, dir .. "/" .. owner .. ".log", { env = { MOCDC_HOME = dir } })
    workers[owner] = pid
    exit_of[pid] = rc_of
    return pid
  end
  -- SIGTERM: serve pauses its workers at a safe point and exits 0 (README, mocdc serve)
  local function term(pid, what)
    util.kill(pid, 15)
    assert.equals(0, eventually(exit_of[pid], 30, what .. " to exit after SIGTERM"))
  end

  local function same(tbl, order)
    local a = up:rows("SELECT * FROM " .. tbl .. " ORDER BY " .. order)
    local ok, b = pcall(down.rows, down, "SELECT * FROM " .. tbl .. " ORDER BY " .. order)
    if not ok then return false, b end
    if #a ~= #b then return false, string.format("%s: %d rows upstream, %d downstream", tbl, #a, #b) end
    for i = 1, #a do
      for j = 1, math.max(#a[i], #b[i]) do
        if a[i][j] ~= b[i][j] then return false, string.format("%s row %d differs", tbl, i) end
      end
    end
    return true
  end

  local function log_of(owner)
    local f = io.open(dir .. "/" .. owner .. ".log")
    local s = f and f:read("*a") or ""
    if f then f:close() end
    return s
  end

  it("creates, shows and refuses subscriptions with clear errors", function()
    up:sql([[CREATE TABLE tpcc.orders (id INT PRIMARY KEY, customer INT, amount DECIMAL(10,2), status VARCHAR(20));
      INSERT INTO tpcc.orders SELECT seq, seq % 50, seq / 3, 'New' FROM seq_1_to_3000;
      CREATE TABLE tpcc.items (w INT NOT NULL, code VARCHAR(10) NOT NULL, qty INT, PRIMARY KEY (w, code));
      INSERT INTO tpcc.items SELECT seq % 7, CONCAT('i', seq), seq FROM seq_1_to_700;
      CREATE TABLE tpcc.logs (msg VARCHAR(20), n INT);
      INSERT INTO tpcc.logs VALUES ('a', 1), ('a', 1), ('b', NULL);]], "tpcc")
    local upstream = up.uri:gsub("^mysql://", "mysql://") -- MariaDB: no account part
    local rc, out, err = sql("CREATE SUBSCRIPTION sync_tpcc DATABASE tpcc FROM '" .. upstream .. "' SYNC_INTERVAL = 1")
    assert.equals(0, rc, err)
    assert.matches("subscription 'sync_tpcc' created", err)
    assert.not_matches(mdb.PASSWORD, out .. err)

    rc, out, err = sql("SHOW SUBSCRIPTIONS")
    assert.equals(0, rc, err)
    assert.matches("| subscription_name | upstream_conn", out, 1, true)
    assert.matches("| sync_tpcc ", out, 1, true)
    assert.not_matches(mdb.PASSWORD, out)
    rc, out = sql("SHOW SUBSCRIPTIONS", "--batch")
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equals("subscription_name\tupstream_conn\tdatabase\ttables\tsync_interval\tstatus\tcreate_time\tupdate_time",
      lines[1])
    local f = {}
    for x in (lines[2] .. "\t"):gmatch("([^\t]*)\t") do f[#f + 1] = x end
    assert.same({ "sync_tpcc", "mysql://root:******@127.0.0.1:" .. up.port, "tpcc", "*", "1", "0" },
      { f[1], f[2], f[3], f[4], f[5], f[6] })

    local function fails(stmt, msg)
      local rc2, _, e2 = sql(stmt)
      assert.equals(2, rc2, e2)
      assert.is_true(cli.one_line(e2), e2)
      assert.matches(msg, e2, 1, true)
    end
    fails("CREATE SUBSCRIPTION sync_tpcc DATABASE tpcc FROM '" .. upstream .. "'",
      "mocdc: error: subscription 'sync_tpcc' already exists")
    fails("CREATE SUBSCRIPTION s2 DATABASE nope FROM '" .. upstream .. "'", "has no database 'nope'")
    fails("CREATE SUBSCRIPTION s2 DATABASE tpcc TABLE nope FROM '" .. upstream .. "'", "has no table tpcc.nope")
    fails("CREATE SUBSCRIPTION s2 tpcc", "syntax error at position 24 near 'tpcc': expected DATABASE <db>")
    fails("DROP SUBSCRIPTION nope", "subscription 'nope' does not exist")
    local rc3, _, e3 = cli.run({ "sql", "SHOW SUBSCRIPTIONS" })
    assert.equals(2, rc3)
    assert.matches("needs --sink-uri URI", e3, 1, true)
  end)

  it("syncs the whole database and mirrors new, changed, truncated, re-created, altered and dropped tables", function()
    local a = serve("A")
    eventually(function() return same("tpcc.orders", "id") and same("tpcc.items", "w, code") and
      same("tpcc.logs", "msg, n") end, 30, "the first sync")
    local jobs = down:rows("SELECT table_name, iteration_state, cn_uuid FROM mocdc.mo_sync_tasks ORDER BY table_name")
    assert.equals(3, #jobs)

    up:sql([[UPDATE tpcc.orders SET status = 'Shipped' WHERE id % 100 = 0;
      DELETE FROM tpcc.orders WHERE id BETWEEN 10 AND 19;
      INSERT INTO tpcc.orders VALUES (5000, 1, 9.99, 'New');
      INSERT INTO tpcc.logs VALUES ('a', 1);
      CREATE TABLE tpcc.fresh (id INT PRIMARY KEY, v VARCHAR(10));
      INSERT INTO tpcc.fresh VALUES (1, 'one'), (2, 'two');]], "tpcc")
    local t0 = util.mono()
    eventually(function() return same("tpcc.fresh", "id") end, 15, "the new table")
    local took = util.mono() - t0
    assert.is_true(took < 5, string.format("new table appeared after %.1f s (interval 1 s, scan 1 s)", took))
    eventually(function() return same("tpcc.orders", "id") and same("tpcc.logs", "msg, n") end, 15, "changes")

    -- TRUNCATE, then rows again
    up:sql("TRUNCATE TABLE tpcc.orders; INSERT INTO tpcc.orders VALUES (7, 7, 7.00, 'After')", "tpcc")
    eventually(function() return same("tpcc.orders", "id") end, 15, "the truncate")
    -- DROP + CREATE with other columns
    up:sql([[DROP TABLE tpcc.items; CREATE TABLE tpcc.items (sku VARCHAR(10) PRIMARY KEY, price DECIMAL(8,2));
      INSERT INTO tpcc.items VALUES ('x1', 1.50), ('x2', 2.50);]], "tpcc")
    eventually(function() return same("tpcc.items", "sku") end, 15, "the re-created table")
    -- a new column
    up:sql("ALTER TABLE tpcc.fresh ADD COLUMN note VARCHAR(20) NULL; UPDATE tpcc.fresh SET note = 'n' WHERE id = 2",
      "tpcc")
    eventually(function() return same("tpcc.fresh", "id") end, 15, "the added column")
    -- DROP
    up:sql("DROP TABLE tpcc.logs", "tpcc")
    eventually(function()
      return #down:rows("SELECT 1 FROM information_schema.tables WHERE table_schema = 'tpcc' AND table_name = 'logs'") == 0
    end, 15, "the dropped table")
    local states = down:rows("SELECT table_name, COUNT(*) FROM mocdc.mo_sync_tasks WHERE iteration_state <> 'cancel' " ..
      "GROUP BY table_name ORDER BY table_name")
    assert.same({ { "fresh", "1" }, { "items", "1" }, { "orders", "1" } }, states)
    assert.equals(0, #down:rows("SELECT 1 FROM mocdc.mo_sync_tasks WHERE iteration_state = 'error'"))
    term(a, "worker A")
    assert.not_matches(mdb.PASSWORD, log_of("A"))
  end)

  it("two workers on one downstream, one killed mid-iteration: the other converges, nothing doubled", function()
    up:sql([[CREATE TABLE tpcc.big (id INT PRIMARY KEY, v VARCHAR(40));
      INSERT INTO tpcc.big SELECT seq, REPEAT('x', 30) FROM seq_1_to_20000;
      CREATE TABLE tpcc.biglog (k INT, v VARCHAR(10));
      INSERT INTO tpcc.biglog SELECT seq % 5000, 'dup' FROM seq_1_to_20000;]], "tpcc")
    local pids = { B = serve("B"), C = serve("C") }
    -- wait until one worker is in the middle of copying big or biglog, and kill it
    local watch = assert(require("mocdc.conn").open(down.uri))
    local victim
    local deadline = util.mono() + 30
    while not victim and util.mono() < deadline do
      local r = watch:query("SELECT table_name, cn_uuid FROM mocdc.mo_sync_tasks WHERE iteration_state = 'running' " ..
        "AND table_name IN ('big', 'biglog')")
      for _, x in ipairs(type(r) == "table" and r or {}) do
        local n = watch:query("SELECT COUNT(*) FROM tpcc." .. x[1])
        n = type(n) == "table" and tonumber(n[1][1]) or 0
        if n > 0 and n < 20000 and pids[x[2]] and not victim then
          util.kill(pids[x[2]], 9)
          victim = x[2]
        end
      end
      util.sleep(0.005)
    end
    watch:close()
    assert.is_truthy(victim, "no worker was caught in the middle of an iteration")
    assert.is_true(cli.wait(pids[victim], 10))
    local survivor = victim == "B" and "C" or "B"
    eventually(function() return same("tpcc.big", "id") and same("tpcc.biglog", "k, v") end, 40, "convergence")
    assert.equals("20000", down:rows("SELECT COUNT(*) FROM tpcc.biglog")[1][1])
    assert.equals("20000", down:rows("SELECT COUNT(*) FROM tpcc.big")[1][1])
    -- the survivor owns every job now and keeps syncing
    up:sql("UPDATE tpcc.big SET v = 'y' WHERE id = 777; INSERT INTO tpcc.biglog VALUES (1, 'dup')", "tpcc")
    eventually(function() return same("tpcc.big", "id") and same("tpcc.biglog", "k, v") end, 20, "changes after the kill")
    -- the survivor took over the victim's jobs
    eventually(function()
      return #down:rows("SELECT 1 FROM mocdc.mo_sync_tasks WHERE iteration_state <> 'cancel' AND cn_uuid <> '" ..
        survivor .. "'") == 0
    end, 20, "the survivor owning every job")
    -- DROP SUBSCRIPTION removes the state; the survivor stops touching the tables
    local rc, _, err = sql("DROP SUBSCRIPTION sync_tpcc")
    assert.equals(0, rc, err)
    assert.equals(0, #down:rows("SELECT 1 FROM mocdc.mo_sync_tasks"))
    assert.equals(0, #down:rows("SELECT 1 FROM mocdc.mo_sync_configs"))
    local _, out = sql("SHOW SUBSCRIPTIONS")
    assert.matches("0 rows in set", out)
    term(pids[survivor], "the survivor")
  end)

  it("mocdc serve --state-uri also supervises `mocdc task` tasks kept in that store", function()
    local bsrc = mdb.start({ name = "sub-binlog-src", binlog = true })
    bsrc:sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v INT); INSERT INTO app.t VALUES (1, 1)")
    local rc, _, err = cli.run({ "task", "create", "--task-name", "t1", "--source-uri", bsrc.uri, "--sink-uri", down.uri,
      "--tables", "app.t:app_copy.t", "--state-uri", down.uri }, { env = { MOCDC_HOME = dir } })
    assert.equals(0, rc, err)
    eventually(function() return #down:rows("SELECT 1 FROM app_copy.t") == 1 end, 20, "the task's full copy")
    -- the task's worker dies; serve must start a new one
    local st = down:rows("SELECT v FROM mocdc.state WHERE k LIKE 'task/%/status'")[1][1]
    local wpid = tonumber(require("cjson").decode(st).pid)
    util.kill(wpid, 9)
    assert.is_true(cli.wait(wpid, 10))
    local s = serve("S")
    bsrc:sql("INSERT INTO app.t VALUES (2, 2)")
    eventually(function() return #down:rows("SELECT 1 FROM app_copy.t") == 2 end, 30, "the restarted task worker")
    term(s, "serve (and its task workers)")
    rc = cli.run({ "task", "drop", "--all", "--source-uri", bsrc.uri, "--state-uri", down.uri }, { env = { MOCDC_HOME = dir } })
    assert.equals(0, rc)
  end)
end)
