-- Issue 9, README promises: transient sink errors provoked on a real server
-- (lock wait timeouts 1205 held by a second connection with a small
-- innodb_lock_wait_timeout, a real deadlock 1213) are retried with the
-- 200 ms -> 30 s backoff and applied in the end, never skipped (not even with
-- errorHandleOption = "ignore"); a persistent one stops after maxRetries with
-- one line and exit 1. Pipeline dead letters: failing rows recorded in
-- dead_letter.jsonl, the rest applied; a keyless table stops instead.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local conn = require("mocdc.conn")
local cjson = require("cjson")
local util = require("mocdc.util.lib")

local eventually = cli.eventually

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function last_line(s)
  local last
  for l in (s or ""):gmatch("[^\n]+") do last = l end
  return last
end

mdb.describe("issue 9: transient sink errors retried, persistent ones stop, dead letters", function()
  local src, sink, home, pipeline
  local lockers = {}
  setup(function()
    src = mdb.start({ name = "re-source", binlog = true })
    sink = mdb.start({ name = "re-sink" })
    home = cli.tmpdir()
    pipeline = home .. "/pipeline.lua"
    local f = assert(io.open(pipeline, "w"))
    f:write([[
set { streamName = var("stream") }
local changes = load.binlog { uri = var("source_uri"), tables = var("tables") }
save.append(changes, var("sink_uri"), { checkpointLocation = var("checkpoint"), maxRetries = vars.max_retries,
  errorHandleOption = vars.eh })
]])
    f:close()
  end)
  teardown(function()
    for _, c in ipairs(lockers) do pcall(c.close, c) end
    if os.getenv("MOCDC_TEST_KEEP") then os.execute("cat " .. home .. "/*.log >&2") end
    os.execute("rm -rf " .. home)
  end)

  local function args(name, extra)
    local a = { "run", pipeline, "--once", "--set", "stream=" .. name, "--set", "source_uri=" .. src.uri,
      "--set", "sink_uri=" .. sink.uri, "--set", "tables=" .. name .. ".t:" .. name .. "_sink.t",
      "--set", "checkpoint=" .. home .. "/" .. name .. "-cp" }
    for _, x in ipairs(extra or {}) do a[#a + 1] = "--set" a[#a + 1] = x end
    return a
  end

  local function run(name, extra)
    return cli.run(args(name, extra), { env = { MOCDC_HOME = home } })
  end

  -- mocdc run in the background; its exit status lands in <name>.rc
  local function spawn(name, extra)
    local log, rcf = home .. "/" .. name .. ".log", home .. "/" .. name .. ".rc"
    local parts = { "MOCDC_HOME=" .. cli.q(home), cli.q(cli.exe) }
    for _, a in ipairs(args(name, extra)) do parts[#parts + 1] = cli.q(a) end
    local cmd = table.concat(parts, " ") .. " >" .. cli.q(log) .. " 2>&1 </dev/null; echo $? >" .. cli.q(rcf)
    os.execute("sh -c " .. cli.q(cmd) .. " >/dev/null 2>&1 </dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &")
    return log, function() return tonumber(read(rcf) or "") end
  end

  local function locker()
    local c = assert(conn.open(sink.uri, { role = "spec" }))
    lockers[#lockers + 1] = c
    return c
  end

  local function ok(c, sql)
    local r, err = c:exec(sql)
    assert(r, tostring(err) .. " (" .. sql .. ")")
    return r
  end

  local function rows(srv, sql) return (srv:rows(sql)) end

  it("lock wait timeouts (1205) are retried 0.2, 0.4, 0.8 s ... and applied once the lock is gone, never dead-lettered", function()
    sink:sql("SET GLOBAL innodb_lock_wait_timeout = 1")
    src:sql("CREATE DATABASE lw; CREATE TABLE lw.t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO lw.t VALUES (1, 'a'), (2, 'b');")
    local rc, _, err = run("lw", { "eh=ignore" })
    assert.equals(0, rc, err)
    assert.same({ { "1", "a" }, { "2", "b" } }, rows(sink, "SELECT * FROM lw_sink.t ORDER BY id"))
    src:sql("UPDATE lw.t SET v = 'A' WHERE id = 1; INSERT INTO lw.t VALUES (3, 'c');")
    local c = locker()
    ok(c, "START TRANSACTION")
    ok(c, "SELECT * FROM lw_sink.t WHERE id = 1 FOR UPDATE")
    local log, rcf = spawn("lw", { "eh=ignore" })
    eventually(function() return (read(log) or ""):find("WARN retry 3/10 in 0.8 s after: ", 1, true) end, 30,
      "three retries")
    assert.is_nil(rcf(), "mocdc run ended while the lock was held:\n" .. (read(log) or ""))
    assert.same({ { "1", "a" }, { "2", "b" } }, rows(sink, "SELECT * FROM lw_sink.t ORDER BY id"))
    ok(c, "COMMIT")
    local code = eventually(rcf, 60, "mocdc run to finish")
    local text = read(log)
    assert.equals(0, code, text)
    assert.same({ { "1", "A" }, { "2", "b" }, { "3", "c" } }, rows(sink, "SELECT * FROM lw_sink.t ORDER BY id"))
    for i, d in ipairs({ "0.2", "0.4", "0.8" }) do
      assert.matches("WARN retry " .. i .. "/10 in " .. d .. " s after: sink root@127%.0%.0%.1:%d+: writing to " ..
        "lw_sink%.t failed: Lock wait timeout exceeded; try restarting transaction %(error 1205%)", text)
    end
    assert.matches("INFO recovered after %d+ retries", text)
    assert.is_nil(read(home .. "/lw-cp/dead_letter.jsonl"), "a transient error was dead-lettered")
    assert.not_matches("ignored %d+ failing row", text)
  end)

  it("a deadlock (1213) on the sink is retried and the transaction applied after the other one", function()
    sink:sql("SET GLOBAL innodb_lock_wait_timeout = 30")
    src:sql("CREATE DATABASE dl; CREATE TABLE dl.t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO dl.t VALUES (1, 'a'), (2, 'b');")
    local rc, _, err = run("dl")
    assert.equals(0, rc, err)
    -- the other transaction writes many rows first: InnoDB rolls back the lighter one (mocdc's)
    sink:sql("CREATE TABLE dl_sink.heavy (id INT PRIMARY KEY, n INT); INSERT INTO dl_sink.heavy SELECT seq, 0 FROM dl_sink.seq_1_to_2000;")
    src:sql("START TRANSACTION; UPDATE dl.t SET v = 'A' WHERE id = 1; UPDATE dl.t SET v = 'B' WHERE id = 2; COMMIT;")
    local c = locker()
    ok(c, "START TRANSACTION")
    ok(c, "UPDATE dl_sink.heavy SET n = n + 1")
    ok(c, "UPDATE dl_sink.t SET v = 'x' WHERE id = 2")
    local log, rcf = spawn("dl")
    -- mocdc holds row 1 and waits for row 2
    eventually(function()
      return rows(sink, "SELECT COUNT(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'")[1][1] == "1"
    end, 30, "mocdc waiting for the row lock")
    ok(c, "UPDATE dl_sink.t SET v = 'y' WHERE id = 1") -- closes the cycle: mocdc is the victim
    ok(c, "COMMIT")
    local code = eventually(rcf, 60, "mocdc run to finish")
    local text = read(log)
    assert.equals(0, code, text)
    assert.matches("WARN retry 1/10 in 0.2 s after: sink root@127%.0%.0%.1:%d+: writing to dl_sink%.t failed: " ..
      "Deadlock found when trying to get lock; try restarting transaction %(error 1213%)", text)
    -- applied after the other transaction: the source's values win
    assert.same({ { "1", "A" }, { "2", "B" } }, rows(sink, "SELECT * FROM dl_sink.t ORDER BY id"))
  end)

  it("a lock held for good stops after maxRetries with one line and exit 1; nothing lost once it is gone", function()
    sink:sql("SET GLOBAL innodb_lock_wait_timeout = 1")
    src:sql("CREATE DATABASE ps; CREATE TABLE ps.t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO ps.t VALUES (1, 'a');")
    local rc, _, err = run("ps")
    assert.equals(0, rc, err)
    src:sql("UPDATE ps.t SET v = 'A' WHERE id = 1")
    local c = locker()
    ok(c, "START TRANSACTION")
    ok(c, "SELECT * FROM ps_sink.t WHERE id = 1 FOR UPDATE")
    local out
    rc, out, err = run("ps", { "max_retries=2" })
    assert.equals(1, rc, err)
    assert.is_true(cli.one_line(err), err)
    assert.matches("^mocdc: error: sink root@127%.0%.0%.1:%d+: writing to ps_sink%.t failed: Lock wait timeout " ..
      "exceeded; try restarting transaction %(error 1205%); still failing after 2 retries over %d+ s %(maxRetries = 2%)$",
      last_line(err))
    assert.matches("WARN retry 2/2 in 0.4 s after: ", err, 1, true)
    assert.not_matches("retry 3/", err, 1, true)
    assert.equals("", out)
    assert.same({ { "1", "a" } }, rows(sink, "SELECT * FROM ps_sink.t"))
    -- a bad maxRetries is a configuration error
    rc, _, err = run("ps", { "max_retries=many" })
    assert.equals(2, rc, err)
    assert.equals("mocdc: error: option maxRetries = 'many' must be a number >= 0", last_line(err))
    ok(c, "ROLLBACK")
    rc, _, err = run("ps")
    assert.equals(0, rc, err)
    assert.same({ { "1", "A" } }, rows(sink, "SELECT * FROM ps_sink.t"))
  end)

  it("a task: a lock held for good stops the worker after --max-retries with err-msg; resume converges", function()
    sink:sql("SET GLOBAL innodb_lock_wait_timeout = 1")
    src:sql("CREATE DATABASE tk; CREATE TABLE tk.t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO tk.t VALUES (1, 'a');")
    local sd = home .. "/tasks-state"
    local function task(a)
      a[#a + 1] = "--state-dir"
      a[#a + 1] = sd
      local rc, out, err = cli.run(a, { env = { MOCDC_HOME = home } })
      assert.equals(0, rc, err)
      return out
    end
    local function show()
      return cjson.decode(task({ "task", "show", "--task-name", "tk", "--source-uri", src.uri }))[1]
    end
    local rc, _, err = cli.run({ "task", "create", "--task-name", "tk", "--source-uri", src.uri, "--sink-uri", sink.uri,
      "--tables", "tk.t:tk_sink.t", "--max-retries", "many", "--state-dir", sd })
    assert.equals(2, rc, err)
    assert.equals("mocdc: error: --max-retries 'many' is not a whole number >= 0", last_line(err))
    task({ "task", "create", "--task-name", "tk", "--source-uri", src.uri, "--sink-uri", sink.uri,
      "--tables", "tk.t:tk_sink.t", "--max-retries", "1" })
    eventually(function() return #rows(sink, "SELECT * FROM tk_sink.t") == 1 end, 30, "the full copy")
    local c = locker()
    ok(c, "START TRANSACTION")
    ok(c, "SELECT * FROM tk_sink.t WHERE id = 1 FOR UPDATE")
    src:sql("UPDATE tk.t SET v = 'A' WHERE id = 1")
    local x = eventually(function()
      local t = show()
      return t.state == "stopped" and t
    end, 60, "the task to stop")
    assert.matches("^sink root@127%.0%.0%.1:%d+: writing to tk_sink%.t failed: Lock wait timeout exceeded; try " ..
      "restarting transaction %(error 1205%); still failing after 1 retries over %d+ s %(maxRetries = 1%)$", x["err-msg"])
    assert.same({ { "1", "a" } }, rows(sink, "SELECT * FROM tk_sink.t"))
    ok(c, "ROLLBACK")
    task({ "task", "resume", "--task-name", "tk", "--source-uri", src.uri })
    eventually(function() return rows(sink, "SELECT v FROM tk_sink.t")[1][1] == "A" end, 30, "convergence after resume")
    task({ "task", "drop", "--task-name", "tk", "--source-uri", src.uri })
  end)

  it("errorHandleOption = ignore: rows the sink refuses go to dead_letter.jsonl (copy and binlog), the rest is applied", function()
    src:sql("CREATE DATABASE dlq; CREATE TABLE dlq.t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO dlq.t VALUES (1, 'a'), (10, 'bad');")
    sink:sql([[CREATE DATABASE dlq_sink;
      CREATE TABLE dlq_sink.t (id INT PRIMARY KEY, v VARCHAR(20), CONSTRAINT no_bad CHECK (v <> 'bad'));]])
    local rc, _, err = run("dlq", { "eh=ignore" })
    assert.equals(0, rc, err)
    assert.matches("ignored 1 failing row(s) of dlq.t (error-handle-option=ignore), recorded in " .. home ..
      "/dlq-cp/dead_letter.jsonl", err, 1, true)
    src:sql("START TRANSACTION; INSERT INTO dlq.t VALUES (2, 'bad'), (3, 'c'); UPDATE dlq.t SET v = 'A' WHERE id = 1; COMMIT;")
    rc, _, err = run("dlq", { "eh=ignore" })
    assert.equals(0, rc, err)
    assert.same({ { "1", "A" }, { "3", "c" } }, rows(sink, "SELECT * FROM dlq_sink.t ORDER BY id"))
    local lines = {}
    for l in (read(home .. "/dlq-cp/dead_letter.jsonl") or ""):gmatch("[^\n]+") do lines[#lines + 1] = cjson.decode(l) end
    assert.equals(2, #lines)
    for i, id in ipairs({ 10, 2 }) do
      local d = lines[i]
      assert.same({ "dlq.t", "dlq_sink.t", { id = tostring(id) }, 4025 }, { d.table, d.sink_table, d.key, d.errno })
      assert.matches("CONSTRAINT `no_bad` failed", d.error, 1, true)
      assert.matches("^REPLACE INTO `dlq_sink`%.`t`", d.statement)
    end
  end)

  it("a keyless table is never replayed row by row: it stops, naming the table, nothing of the transaction applied", function()
    src:sql("CREATE DATABASE nk; CREATE TABLE nk.t (a INT, v VARCHAR(20)); INSERT INTO nk.t VALUES (1, 'a');")
    sink:sql([[CREATE DATABASE nk_sink;
      CREATE TABLE nk_sink.t (a INT, v VARCHAR(20), CONSTRAINT nk_bad CHECK (v <> 'bad'));]])
    local rc, _, err = run("nk", { "eh=ignore" })
    assert.equals(0, rc, err)
    src:sql("INSERT INTO nk.t VALUES (2, 'b'), (3, 'bad'), (4, 'd')")
    rc, _, err = run("nk", { "eh=ignore" })
    assert.equals(1, rc, err)
    assert.is_true(cli.one_line(err), err)
    assert.matches("^mocdc: error: sink root@127%.0%.0%.1:%d+: writing to nk_sink%.t failed: CONSTRAINT `nk_bad` " ..
      "failed for `nk_sink`%.`t` %(error 4025%); nk%.t has no key: its rows are never skipped one by one " ..
      "%(that could double rows%); fix the sink or the row, or give idCols$", last_line(err))
    assert.same({ { "1", "a" } }, rows(sink, "SELECT * FROM nk_sink.t ORDER BY a"))
    assert.is_nil(read(home .. "/nk-cp/dead_letter.jsonl"))
    assert.not_matches("retry 1/", err, 1, true)
  end)
end)
