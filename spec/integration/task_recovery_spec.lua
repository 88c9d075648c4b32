-- Issue 4: tasks recover by themselves. A sink server restarted mid-task (the
-- worker retries with backoff and converges), and `task create` followed by
-- `kill -9` of the background worker, then `mocdc serve` (SIGTERM: pauses the
-- workers, exits 0) or `task resume`: nothing lost, nothing doubled. "Doubled"
-- is measured on the sink: a trigger counts every row write that committed.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local cjson = require("cjson")
local util = require("mocdc.util.lib")
local state = require("mocdc.task.state")

local PW = mdb.PASSWORD

local eventually = cli.eventually

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

mdb.describe("mocdc task: recovery (issue 4)", function()
  local src, sink, home
  local seen = {}
  local serve_pid -- the `mocdc serve` this spec started (stopped in teardown if a test failed early)
  setup(function()
    src = mdb.start({ name = "tr-source", binlog = true })
    sink = mdb.start({ name = "tr-sink" })
    home = cli.tmpdir()
  end)
  teardown(function()
    if serve_pid and util.kill(serve_pid, 0) ~= nil then
      util.kill(serve_pid, 15)
      if not cli.wait(serve_pid, 30) then util.kill(serve_pid, 9) end
    end
    if os.getenv("MOCDC_TEST_KEEP") then os.execute("cat " .. home .. "/logs/*.log >&2") end
    cli.run({ "task", "drop", "--all", "--source-uri", src.uri, "--state-dir", home })
    os.execute("rm -rf " .. home)
  end)

  local function task(args)
    local a = { "task" }
    for _, x in ipairs(args) do a[#a + 1] = x end
    a[#a + 1] = "--state-dir"
    a[#a + 1] = home
    local rc, out, err = cli.run(a)
    seen[#seen + 1] = out .. err
    assert.not_matches(PW, out .. err, 1, true)
    assert.equals(0, rc, err)
    return out, err
  end

  local function show(name)
    local list = cjson.decode((task({ "show", "--task-name", name, "--source-uri", src.uri })))
    return list[1]
  end

  local function raw_status(id)
    local st = state.open({ state_dir = home })
    local s = st:get("task/" .. id .. "/status")
    st:close()
    return s and cjson.decode(s)
  end

  -- a live process, not a zombie waiting for init to reap it
  local function alive(pid)
    if not pid or util.kill(pid, 0) == nil then return false end
    local st = (read("/proc/" .. pid .. "/stat") or ""):match("^%d+ %b() (%a)")
    return st ~= "Z" and st ~= "X"
  end

  local function worker_pids(id)
    local p = io.popen("pgrep -f 'task-worke[r] " .. id .. "'")
    local out = {}
    for pid in p:read("*a"):gmatch("%d+") do
      if alive(tonumber(pid)) then out[#out + 1] = tonumber(pid) end
    end
    p:close()
    return out
  end

  local function kill9_worker(id)
    local pid = raw_status(id).pid
    assert.truthy(alive(pid))
    util.kill(pid, 9)
    eventually(function() return not alive(pid) end, 10, "worker gone")
    return pid
  end

  it("a sink server restarted mid-task: the worker retries by itself and converges", function()
    src:sql([[CREATE DATABASE sr_db; CREATE TABLE sr_db.t (id INT PRIMARY KEY, v VARCHAR(20));
      INSERT INTO sr_db.t VALUES (1, 'a'), (2, 'b');]])
    task({ "create", "--task-name", "sr", "--source-uri", src.uri, "--sink-uri", sink.uri, "--tables", "sr_db.t:sr_sink.t" })
    local id = show("sr")["task-id"]
    local q = "SELECT * FROM sr_sink.t ORDER BY id"
    eventually(function() return #sink:rows(q) == 2 end, 30, "full copy")
    local pid = raw_status(id).pid
    sink:stop()
    src:sql([[INSERT INTO sr_db.t VALUES (3, 'c'); UPDATE sr_db.t SET v = 'A' WHERE id = 1;
      DELETE FROM sr_db.t WHERE id = 2;]])
    -- the worker notices the outage and says so (retryable error, still running)
    local e = eventually(function()
      local x = show("sr")
      return x["err-msg"]:match("^R:%d+:") and x
    end, 20, "a retry reported in err-msg")
    assert.equals("running", e.state)
    -- down for a while: several retries
    eventually(function() return tonumber(show("sr")["err-msg"]:match("^R:(%d+):")) >= 3 end, 30, "three retries")
    sink:start_again()
    src:sql("INSERT INTO sr_db.t VALUES (4, 'd')")
    eventually(function() return #sink:rows(q) == 3 and sink:rows(q)[3][1] == "4" end, 60, "convergence after the restart")
    assert.same({ { "1", "A" }, { "3", "c" }, { "4", "d" } }, (sink:rows(q)))
    e = eventually(function()
      local x = show("sr")
      return x["err-msg"] == "" and x
    end, 10, "err-msg cleared after recovery")
    assert.equals("running", e.state)
    assert.equals(pid, raw_status(id).pid) -- the same worker recovered by itself
    task({ "drop", "--task-name", "sr", "--source-uri", src.uri })
  end)

  it("kill -9 of the worker, then mocdc serve (SIGTERM exits 0) and task resume: nothing lost, nothing doubled", function()
    src:sql([[CREATE DATABASE kl_db; CREATE TABLE kl_db.t (id INT PRIMARY KEY, v INT);]])
    local vals = {}
    for i = 1, 50 do vals[#vals + 1] = string.format("(%d, %d)", i, i) end
    src:sql("INSERT INTO kl_db.t VALUES " .. table.concat(vals, ", "))
    -- the sink table exists up front, with a trigger counting every committed row write
    sink:sql([[CREATE DATABASE kl_sink; CREATE TABLE kl_sink.t (id INT PRIMARY KEY, v INT);
      CREATE TABLE kl_sink.audit (id INT NOT NULL);
      CREATE TRIGGER kl_sink.t_ins BEFORE INSERT ON kl_sink.t FOR EACH ROW INSERT INTO kl_sink.audit VALUES (NEW.id);
      CREATE TRIGGER kl_sink.t_upd BEFORE UPDATE ON kl_sink.t FOR EACH ROW INSERT INTO kl_sink.audit VALUES (NEW.id);]])
    task({ "create", "--task-name", "kl", "--source-uri", src.uri, "--sink-uri", sink.uri, "--tables", "kl_db.t:kl_sink.t" })
    local id = show("kl")["task-id"]
    local q = "SELECT COUNT(*), COALESCE(SUM(v), 0) FROM kl_sink.t"
    local function converged(n)
      return function()
        local r = sink:rows(q)[1]
        return r[1] == tostring(n) and r[2] == tostring(n * (n + 1) / 2)
      end
    end
    eventually(converged(50), 30, "full copy")
    local n = 50
    local function insert_rows(k) -- k single-row transactions
      local stmts = {}
      for _ = 1, k do
        n = n + 1
        stmts[#stmts + 1] = string.format("INSERT INTO kl_db.t VALUES (%d, %d);", n, n)
      end
      src:sql(table.concat(stmts, "\n"))
    end
    -- pause/resume/show agree with the worker in quick succession
    for _ = 1, 3 do
      insert_rows(3)
      task({ "pause", "--task-name", "kl", "--source-uri", src.uri })
      assert.equals("stopped", show("kl").state)
      assert.same({}, worker_pids(id))
      task({ "resume", "--task-name", "kl", "--source-uri", src.uri })
      assert.equals("running", show("kl").state)
      assert.equals(1, #worker_pids(id))
    end
    -- kill -9 while changes stream in
    insert_rows(20)
    kill9_worker(id)
    insert_rows(30)
    local e = show("kl")
    assert.equals("stopped", e.state)
    assert.matches("exited unexpectedly", e["err-msg"])
    -- mocdc serve brings it back
    local rcfile = home .. "/serve.rc"
    local p = io.popen("sh -c " .. cli.q(cli.q(cli.exe) .. " serve --state-dir " .. cli.q(home) .. " >>" ..
      cli.q(home .. "/serve.log") .. " 2>&1 </dev/null & echo $! > " .. cli.q(home .. "/serve.pid") ..
      "; wait $!; echo $? > " .. cli.q(rcfile)) .. " >/dev/null 2>&1 </dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &")
    p:close()
    serve_pid = eventually(function() return tonumber(read(home .. "/serve.pid") or "") end, 5, "serve pid")
    eventually(converged(n), 30, "catch-up under serve")
    assert.equals("running", show("kl").state)
    -- serve restarts a worker that dies under it
    local old = kill9_worker(id)
    insert_rows(25)
    eventually(function()
      local s = raw_status(id)
      return s.pid ~= old and alive(s.pid) and s.state == "running"
    end, 20, "serve restarting the worker")
    eventually(converged(n), 30, "catch-up after the second kill")
    -- under serve, a paused task stays paused, and a resumed one gets exactly one worker.
    -- Proof that serve looked after the pause (or the resume): a probe task's worker killed
    -- twice, and restarted by serve each time (the second time in a pass begun after it)
    src:sql("CREATE TABLE kl_db.probe (id INT PRIMARY KEY)")
    task({ "create", "--task-name", "kl_probe", "--source-uri", src.uri, "--sink-uri", sink.uri,
      "--tables", "kl_db.probe:kl_sink.probe" })
    local probe = show("kl_probe")["task-id"]
    local function serve_passed()
      for _ = 1, 2 do
        local gone = kill9_worker(probe)
        eventually(function()
          local s = raw_status(probe)
          return s.pid ~= gone and alive(s.pid) and s.state == "running"
        end, 20, "serve restarting the probe task's worker")
      end
    end
    task({ "pause", "--task-name", "kl", "--source-uri", src.uri })
    assert.equals("stopped", show("kl").state)
    insert_rows(5)
    serve_passed()
    assert.equals("stopped", show("kl").state)
    assert.same({}, worker_pids(id))
    task({ "resume", "--task-name", "kl", "--source-uri", src.uri })
    eventually(function() return #worker_pids(id) == 1 end, 20, "the resumed task's worker")
    serve_passed()
    assert.equals(1, #worker_pids(id))
    assert.equals("running", show("kl").state)
    eventually(converged(n), 30, "catch-up after pause/resume under serve")
    -- SIGTERM: serve pauses its workers at a safe point and exits 0
    local wpid = raw_status(id).pid
    util.kill(serve_pid, 15)
    local rc = eventually(function() return tonumber(read(rcfile) or "") end, 30, "serve exiting")
    serve_pid = nil
    assert.equals(0, rc)
    assert.is_falsy(alive(wpid))
    e = show("kl")
    assert.equals("stopped", e.state)
    assert.equals("", e["err-msg"])
    local serve_log = read(home .. "/serve.log") or ""
    assert.not_matches(PW, serve_log, 1, true)
    -- task resume after another kill -9
    insert_rows(10)
    task({ "resume", "--task-name", "kl", "--source-uri", src.uri })
    eventually(converged(n), 30, "catch-up after resume")
    insert_rows(10)
    kill9_worker(id)
    insert_rows(10)
    task({ "resume", "--task-name", "kl", "--source-uri", src.uri })
    eventually(converged(n), 30, "catch-up after kill -9 and resume")
    e = show("kl")
    assert.equals("running", e.state)
    assert.equals("", e["err-msg"])
    -- exactly the source rows, and every row written exactly once
    assert.same(src:rows("SELECT * FROM kl_db.t ORDER BY id"), (sink:rows("SELECT * FROM kl_sink.t ORDER BY id")))
    local a = sink:rows("SELECT COUNT(*), COUNT(DISTINCT id) FROM kl_sink.audit")[1]
    assert.same({ tostring(n), tostring(n) }, a)
    task({ "drop", "--task-name", "kl", "--source-uri", src.uri })
    task({ "drop", "--task-name", "kl_probe", "--source-uri", src.uri })
    -- nothing secret in any output or worker log
    for _, s in ipairs(seen) do assert.not_matches(PW, s, 1, true) end
    local lp = io.popen("cat " .. cli.q(home) .. "/logs/*.log")
    local logs = lp:read("*a")
    lp:close()
    assert.not_matches(PW, logs, 1, true)
  end)
end)
