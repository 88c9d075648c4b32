-- Issue 4, the checked items beyond the seeds: restart, drop without orphans,
-- the --all variants, --no-full, --exclude, --start-ts/--end-ts,
-- --max-sql-length, --error-handle-option both ways, two tasks to two sinks,
-- passwords from the environment and from files, refusals of bad input, the
-- JSON of `task show`, and no password in any output or log. MariaDB servers
-- in both roles. (Crash and outage recovery: task_recovery_spec.lua.)
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local cjson = require("cjson")
local util = require("mocdc.util.lib")
local state = require("mocdc.task.state")

local PW = mdb.PASSWORD
local FIELDS = { "checkpoint", "err-msg", "sink-uri", "source-uri", "state", "task-id", "task-name", "timestamp" }

local eventually = cli.eventually

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

mdb.describe("mocdc task: lifecycle, options and refusals (issue 4)", function()
  local src, sink, sink2, home
  local seen = {} -- every stdout+stderr of every command run
  setup(function()
    src = mdb.start({ name = "tm-source", binlog = true })
    sink = mdb.start({ name = "tm-sink" })
    sink2 = mdb.start({ name = "tm-sink2" })
    home = cli.tmpdir()
  end)
  teardown(function()
    if os.getenv("MOCDC_TEST_KEEP") then os.execute("cat " .. home .. "/logs/*.log >&2") end
    cli.run({ "task", "drop", "--all", "--source-uri", src.uri, "--state-dir", home })
    os.execute("rm -rf " .. home)
  end)

  local function task(args, env)
    local a = { "task" }
    for _, x in ipairs(args) do a[#a + 1] = x end
    a[#a + 1] = "--state-dir"
    a[#a + 1] = home
    local rc, out, err = cli.run(a, { env = env })
    seen[#seen + 1] = out .. err
    assert.not_matches(PW, out .. err, 1, true)
    return rc, out, err
  end

  local function ok_task(args, env)
    local rc, out, err = task(args, env)
    assert.equals(0, rc, err)
    return out, err
  end

  local function show_all()
    return cjson.decode((ok_task({ "show", "--all", "--source-uri", src.uri })))
  end

  local function show(name)
    local list = cjson.decode((ok_task({ "show", "--task-name", name, "--source-uri", src.uri })))
    assert.equals(1, #list)
    return list[1]
  end

  local function create(name, extra, env)
    local args = { "create", "--task-name", name, "--source-uri", src.uri, "--sink-type", "mysql",
      "--sink-uri", sink.uri }
    for _, x in ipairs(extra or {}) do args[#args + 1] = x end
    -- later --flags win: extra may override --sink-uri
    ok_task(args, env)
    return show(name)["task-id"]
  end

  local function raw_status(id)
    local st = state.open({ state_dir = home })
    local s = st:get("task/" .. id .. "/status")
    st:close()
    return s and cjson.decode(s)
  end

  local function worker_pids(id)
    local p = io.popen("pgrep -f 'task-worke[r] " .. id .. "'")
    local out = p:read("*a")
    p:close()
    return out
  end

  -- drop leaves nothing: no watermark rows in the sink(s), no keys in the
  -- state store, no checkpoint directory, no worker process
  local function assert_no_orphans(id, sinks)
    for _, s in ipairs(sinks) do
      local r = s:rows("SELECT COUNT(*) FROM mocdc.watermark WHERE pipeline = 'task:" .. id .. "'")
      assert.equals("0", r[1][1], "watermark rows left in " .. s.name)
    end
    local st = state.open({ state_dir = home })
    local keys = st:keys("task/" .. id)
    st:close()
    assert.same({}, keys)
    assert.is_falsy(util.exists(home .. "/tasks/" .. id))
    assert.equals("", worker_pids(id))
  end

  local function assert_show_shape(list)
    for _, e in ipairs(list) do
      local keys = {}
      for k in pairs(e) do keys[#keys + 1] = k end
      table.sort(keys)
      assert.same(FIELDS, keys)
      assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-7%x%x%x%-[89ab]%x%x%x%-%x+$", e["task-id"])
      assert.matches("^mysql://root:%*%*%*%*%*%*@127%.0%.0%.1:%d+$", e["source-uri"])
      assert.matches("^mysql://root:%*%*%*%*%*%*@127%.0%.0%.1:%d+$", e["sink-uri"])
      assert.truthy(e.state == "running" or e.state == "stopped")
      assert.matches("^{\n.*}$", e.checkpoint)
      assert.matches("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d%.%d+ %+0000 UTC$", e.timestamp)
    end
  end

  it("task create refuses bad input with one clear line and the exit code of its kind", function()
    src:sql([[CREATE DATABASE bad_db; CREATE TABLE bad_db.t (id INT PRIMARY KEY, v INT); INSERT INTO bad_db.t VALUES (1, 1);]])
    local dead = "mysql://root:" .. PW .. "@127.0.0.1:1"
    local cases = {
      { "unreachable source", { "--source-uri", dead, "--tables", "bad_db.t" }, "cannot connect to %a+ root@127%.0%.0%.1:1", 1 },
      { "unreachable sink", { "--sink-uri", dead, "--tables", "bad_db.t" }, "cannot connect to %a+ root@127%.0%.0%.1:1", 1 },
      { "missing table", { "--tables", "bad_db.nope:x.y" }, "bad_db%.nope does not exist", 2 },
      { "bad regex", { "--level", "database", "--databases", "bad_db", "--exclude", "a(b" }, "exclude.*invalid regex", 2 },
      { "end-ts before start-ts", { "--tables", "bad_db.t", "--start-ts", "2024-01-02 00:00:00",
        "--end-ts", "2024-01-01 00:00:00" }, "end%-ts.*later than %-%-start%-ts", 2 },
      { "bad timestamp", { "--tables", "bad_db.t", "--start-ts", "yesterday" }, "start%-ts 'yesterday' is not a timestamp", 2 },
      { "unknown sink-type", { "--tables", "bad_db.t", "--sink-type", "oracle" }, "sink%-type 'oracle' is not supported", 2 },
      { "max-sql-length too small", { "--tables", "bad_db.t", "--max-sql-length", "100" }, "max%-sql%-length", 2 },
      { "max-sql-length above max_allowed_packet", { "--tables", "bad_db.t", "--max-sql-length", "1073741824" },
        "max_allowed_packet", 2 },
      { "bad error-handle-option", { "--tables", "bad_db.t", "--error-handle-option", "retry" }, "stop or ignore", 2 },
      { "unknown flag", { "--tables", "bad_db.t", "--exlude", "x" }, "does not take %-%-exlude", 2 },
    }
    for i, c in ipairs(cases) do
      local args = { "create", "--task-name", "bad" .. i, "--source-uri", src.uri, "--sink-uri", sink.uri }
      for _, x in ipairs(c[2]) do args[#args + 1] = x end
      -- the case's own --source-uri / --sink-uri come later and win
      local rc, _, err = task(args)
      assert.equals(c[4], rc, c[1] .. ": " .. err)
      assert.is_true(cli.one_line(err), c[1] .. ": not one line: " .. err)
      assert.matches(c[3], err, nil, false, c[1])
    end
    -- duplicate name (per source user)
    create("dup", { "--tables", "bad_db.t:bad_sink.t" })
    local rc, _, err = task({ "create", "--task-name", "dup", "--source-uri", src.uri, "--sink-uri", sink.uri,
      "--tables", "bad_db.t:bad_sink2.t" })
    assert.equals(2, rc)
    assert.is_true(cli.one_line(err), err)
    assert.matches("task 'dup' already exists", err)
    -- none of the refused tasks was stored
    local list = show_all()
    assert.equals(1, #list)
    assert.equals("dup", list[1]["task-name"])
    ok_task({ "drop", "--task-name", "dup", "--source-uri", src.uri })
  end)

  it("passwords from MOCDC_*_PASSWORD and --*-password-file; task show JSON; no password in any output or log", function()
    src:sql([[CREATE DATABASE pw_db; CREATE TABLE pw_db.t (id INT PRIMARY KEY, v VARCHAR(20));
      INSERT INTO pw_db.t VALUES (1, 'a'), (2, 'b');]])
    local nopw_src = "mysql://root@127.0.0.1:" .. src.port
    local nopw_sink = "mysql://root@127.0.0.1:" .. sink.port
    ok_task({ "create", "--task-name", "pw_env", "--source-uri", nopw_src, "--sink-uri", nopw_sink,
      "--level", "table", "--tables", "pw_db.t:pw_env.t" }, { MOCDC_SOURCE_PASSWORD = PW, MOCDC_SINK_PASSWORD = PW })
    write(home .. "/src.pw", PW .. "\n")
    write(home .. "/sink.pw", PW .. "\n")
    ok_task({ "create", "--task-name", "pw_file", "--source-uri", nopw_src, "--sink-uri", nopw_sink,
      "--level", "table", "--tables", "pw_db.t:pw_file.t",
      "--source-password-file", home .. "/src.pw", "--sink-password-file", home .. "/sink.pw" })
    -- no password at all: refused, one line
    local rc, _, err = task({ "create", "--task-name", "pw_none", "--source-uri", nopw_src, "--sink-uri", nopw_sink,
      "--tables", "pw_db.t:pw_none.t" })
    assert.equals(1, rc, err)
    assert.is_true(cli.one_line(err), err)
    assert.matches("Access denied", err)
    local want = { { "1", "a" }, { "2", "b" }, { "3", "c" } }
    src:sql("INSERT INTO pw_db.t VALUES (3, 'c')")
    for _, db in ipairs({ "pw_env", "pw_file" }) do
      eventually(function() return #sink:rows("SELECT * FROM " .. db .. ".t") == 3 end, 30, db)
      assert.same(want, (sink:rows("SELECT * FROM " .. db .. ".t ORDER BY id")))
    end
    -- show --all: exactly the seed's fields, masked URIs; the password-less URI sees the same tasks
    local list = show_all()
    assert.equals(2, #list)
    assert_show_shape(list)
    local names = { list[1]["task-name"], list[2]["task-name"] }
    table.sort(names)
    assert.same({ "pw_env", "pw_file" }, names)
    for _, e in ipairs(list) do
      assert.equals("running", e.state)
      assert.equals("", e["err-msg"])
    end
    eventually(function()
      return show("pw_env").checkpoint:find('"pw_db.t": %d%d%d%d%-') ~= nil
    end, 10, "per-table checkpoint")
    local other = cjson.decode((ok_task({ "show", "--all", "--source-uri", nopw_src })))
    assert.equals(2, #other)
    -- a user of another source sees none of them
    assert.equals("[]", (ok_task({ "show", "--all", "--source-uri", "mysql://other:x@127.0.0.1:" .. src.port }))
      :match("^%s*(.-)%s*$"))
    local ids = { list[1]["task-id"], list[2]["task-id"] }
    ok_task({ "drop", "--all", "--source-uri", src.uri })
    for _, id in ipairs(ids) do assert_no_orphans(id, { sink }) end
    -- no password in any output of any command so far, nor in any worker log
    for _, s in ipairs(seen) do assert.not_matches(PW, s, 1, true) end
    local p = io.popen("cat " .. cli.q(home) .. "/logs/*.log")
    local logs = p:read("*a")
    p:close()
    assert.truthy(#logs > 0)
    assert.not_matches(PW, logs, 1, true)
  end)

  it("task restart discards progress and re-copies (sink converges); drop leaves no orphan state", function()
    src:sql([[CREATE DATABASE rs_db; CREATE TABLE rs_db.t (id INT PRIMARY KEY, v VARCHAR(20));
      INSERT INTO rs_db.t VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e');]])
    local id = create("rs", { "--tables", "rs_db.t:rs_sink.t" })
    local q = "SELECT * FROM rs_sink.t ORDER BY id"
    eventually(function() return #sink:rows(q) == 5 end, 30, "full copy")
    ok_task({ "pause", "--task-name", "rs", "--source-uri", src.uri })
    assert.equals("stopped", show("rs").state)
    -- while paused: the source changes, and the sink drifts (damaged, extra row)
    src:sql([[DELETE FROM rs_db.t WHERE id = 5; INSERT INTO rs_db.t VALUES (6, 'f');]])
    sink:sql([[DELETE FROM rs_sink.t WHERE id = 2; UPDATE rs_sink.t SET v = 'junk' WHERE id = 3;
      INSERT INTO rs_sink.t VALUES (99, 'stray');]])
    local _, err = ok_task({ "restart", "--task-name", "rs", "--source-uri", src.uri })
    assert.matches("restarted", err)
    local want = { { "1", "a" }, { "2", "b" }, { "3", "c" }, { "4", "d" }, { "6", "f" } }
    eventually(function() return #sink:rows(q) == 5 and sink:rows(q)[5][1] == "6" end, 30, "re-copy")
    assert.same(want, (sink:rows(q)))
    local e = show("rs")
    assert.equals("running", e.state)
    assert.equals("", e["err-msg"])
    -- and it streams again after the copy
    src:sql("UPDATE rs_db.t SET v = 'A' WHERE id = 1")
    want[1][2] = "A"
    eventually(function() return sink:rows(q)[1][2] == "A" end, 30, "changes after restart")
    assert.same(want, (sink:rows(q)))
    -- restart of a running task works too (stops it first)
    ok_task({ "restart", "--task-name", "rs", "--source-uri", src.uri })
    eventually(function() return #sink:rows(q) == 5 end, 30, "second re-copy")
    assert.same(want, (sink:rows(q)))
    -- drop: no orphan anywhere; the synced data stays
    local pid = raw_status(id).pid
    ok_task({ "drop", "--task-name", "rs", "--source-uri", src.uri })
    assert_no_orphans(id, { sink })
    assert.is_false(util.kill(pid, 0) ~= nil and worker_pids(id) ~= "")
    assert.same(want, (sink:rows(q)))
    local rc, _, derr = task({ "show", "--task-name", "rs", "--source-uri", src.uri })
    assert.equals(2, rc)
    assert.matches("no task named 'rs'", derr)
  end)

  it("two tasks from one source to two sinks; pause --all, resume, drop --all", function()
    src:sql([[CREATE DATABASE two_db; CREATE TABLE two_db.t (id INT PRIMARY KEY, v INT);
      INSERT INTO two_db.t VALUES (1, 10), (2, 20), (3, 30);]])
    local a = create("two_a", { "--tables", "two_db.t:two_a.t" })
    local b = create("two_b", { "--tables", "two_db.t:two_b.t", "--sink-uri", sink2.uri })
    local qa, qb = "SELECT * FROM two_a.t ORDER BY id", "SELECT * FROM two_b.t ORDER BY id"
    local function converged(want)
      return function()
        local ra, rb = sink:rows(qa), sink2:rows(qb)
        return #ra == #want and #rb == #want and cjson.encode(ra) == cjson.encode(want) and
          cjson.encode(rb) == cjson.encode(want)
      end
    end
    eventually(converged({ { "1", "10" }, { "2", "20" }, { "3", "30" } }), 30, "both full copies")
    src:sql("INSERT INTO two_db.t VALUES (4, 40); UPDATE two_db.t SET v = 11 WHERE id = 1;")
    local want = { { "1", "11" }, { "2", "20" }, { "3", "30" }, { "4", "40" } }
    eventually(converged(want), 30, "both incremental")
    -- pause --all: both stop, no worker left, nothing arrives
    local _, err = ok_task({ "pause", "--all", "--source-uri", src.uri })
    assert.matches("two_a' paused", err)
    assert.matches("two_b' paused", err)
    for _, e in ipairs(show_all()) do assert.equals("stopped", e.state) end
    assert.equals("", worker_pids(a))
    assert.equals("", worker_pids(b))
    src:sql("INSERT INTO two_db.t VALUES (5, 50); DELETE FROM two_db.t WHERE id = 2;")
    -- nothing can apply them: no worker process (checked above)
    assert.same(want, (sink:rows(qa)))
    assert.same(want, (sink2:rows(qb)))
    -- resume each
    ok_task({ "resume", "--task-name", "two_a", "--source-uri", src.uri })
    ok_task({ "resume", "--task-name", "two_b", "--source-uri", src.uri })
    for _, e in ipairs(show_all()) do assert.equals("running", e.state) end
    -- resuming a running task is refused (only a stopped task can be resumed)
    local rc, _, rerr = task({ "resume", "--task-name", "two_a", "--source-uri", src.uri })
    assert.equals(2, rc)
    assert.matches("is running", rerr)
    want = { { "1", "11" }, { "3", "30" }, { "4", "40" }, { "5", "50" } }
    eventually(converged(want), 30, "both resumed")
    -- drop --all
    ok_task({ "drop", "--all", "--source-uri", src.uri })
    assert_no_orphans(a, { sink, sink2 })
    assert_no_orphans(b, { sink, sink2 })
    assert.same({}, show_all())
  end)

  it("--no-full: existing rows are not copied, later changes arrive", function()
    src:sql([[CREATE DATABASE nf_db; CREATE TABLE nf_db.t (id INT PRIMARY KEY, v VARCHAR(10));
      INSERT INTO nf_db.t VALUES (1, 'a'), (2, 'b'), (3, 'c');]])
    create("nf", { "--tables", "nf_db.t:nf_sink.t", "--no-full" })
    src:sql([[INSERT INTO nf_db.t VALUES (4, 'd'); UPDATE nf_db.t SET v = 'A' WHERE id = 1;
      DELETE FROM nf_db.t WHERE id = 2;]])
    local q = "SELECT * FROM nf_sink.t ORDER BY id"
    -- a later row marks the end: once it arrived, everything before it was applied
    src:sql("INSERT INTO nf_db.t VALUES (100, 'end')")
    eventually(function() return #sink:rows("SELECT 1 FROM nf_sink.t WHERE id = 100") == 1 end, 30, "changes after create")
    assert.same({ { "1", "A" }, { "4", "d" }, { "100", "end" } }, (sink:rows(q)))
    ok_task({ "drop", "--task-name", "nf", "--source-uri", src.uri })
  end)

  it("--exclude REGEX: excluded tables never appear in the sink", function()
    src:sql([[CREATE DATABASE ex_db;
      CREATE TABLE ex_db.keep_a (id INT PRIMARY KEY); CREATE TABLE ex_db.keep_b (id INT PRIMARY KEY);
      CREATE TABLE ex_db.skip_me (id INT PRIMARY KEY); CREATE TABLE ex_db.skip_log (id INT PRIMARY KEY);
      INSERT INTO ex_db.keep_a VALUES (1); INSERT INTO ex_db.keep_b VALUES (1);
      INSERT INTO ex_db.skip_me VALUES (1); INSERT INTO ex_db.skip_log VALUES (1);]])
    local id = create("ex", { "--level", "database", "--databases", "ex_db:ex_sink", "--exclude", "skip_.*" })
    eventually(function() return #sink:rows("SELECT * FROM ex_sink.keep_b") == 1 end, 30, "full copy")
    src:sql([[INSERT INTO ex_db.skip_me VALUES (2); INSERT INTO ex_db.skip_log VALUES (2);
      CREATE TABLE ex_db.skip_new (id INT PRIMARY KEY); INSERT INTO ex_db.skip_new VALUES (1);
      INSERT INTO ex_db.keep_a VALUES (2);]])
    -- keep_a's row 2 comes after the skipped tables' events in the binlog: once it arrived,
    -- those were seen (and skipped)
    eventually(function() return #sink:rows("SELECT * FROM ex_sink.keep_a") == 2 end, 30, "changes")
    assert.same({ { "keep_a" }, { "keep_b" } },
      (sink:rows("SELECT table_name FROM information_schema.tables WHERE table_schema = 'ex_sink' ORDER BY 1")))
    assert.same({ { "ex_db.keep_a" }, { "ex_db.keep_b" } },
      (sink:rows("SELECT source_table FROM mocdc.watermark WHERE pipeline = 'task:" .. id .. "' ORDER BY 1")))
    assert.equals("running", show("ex").state)
    ok_task({ "drop", "--task-name", "ex", "--source-uri", src.uri })
  end)

  it("--start-ts/--end-ts: only changes inside the window; the task then stops by itself", function()
    src:sql([[CREATE DATABASE ts_db; CREATE TABLE ts_db.t (id INT PRIMARY KEY, v VARCHAR(10));
      INSERT INTO ts_db.t VALUES (1, 'before'), (2, 'before');]])
    local t0 = math.floor(util.now())
    while util.now() < t0 + 2 do util.sleep(0.05) end
    local fmt = function(t) return os.date("!%Y-%m-%d %H:%M:%S", t) end
    local start_ts, end_ts = t0 + 1, math.floor(util.now()) + 4
    create("ts", { "--tables", "ts_db.t:ts_sink.t", "--start-ts", fmt(start_ts), "--end-ts", fmt(end_ts) })
    src:sql([[INSERT INTO ts_db.t VALUES (10, 'inside'); UPDATE ts_db.t SET v = 'changed' WHERE id = 1;]])
    local q = "SELECT * FROM ts_sink.t ORDER BY id"
    eventually(function() return #sink:rows(q) == 2 end, 30, "changes inside the window")
    while util.now() < end_ts + 1.2 do util.sleep(0.05) end
    src:sql([[INSERT INTO ts_db.t VALUES (20, 'after'); UPDATE ts_db.t SET v = 'late' WHERE id = 2;]])
    local e = eventually(function()
      local x = show("ts")
      return x.state == "stopped" and x
    end, 30, "the task stopping at end-ts")
    assert.equals("", e["err-msg"])
    assert.same({ { "1", "changed" }, { "10", "inside" } }, (sink:rows(q)))
    ok_task({ "drop", "--task-name", "ts", "--source-uri", src.uri })
  end)

  it("--max-sql-length N: no statement sent to the sink is longer than N", function()
    src:sql([[CREATE DATABASE ms_db; CREATE TABLE ms_db.t (id INT PRIMARY KEY, pad VARCHAR(600));
      INSERT INTO ms_db.t VALUES (1, 'x');]])
    sink:sql("SET GLOBAL log_output = 'TABLE'; SET GLOBAL general_log = 1;")
    create("ms", { "--tables", "ms_db.t:ms_sink.t", "--max-sql-length", os.getenv("MSL") or "2048" })
    eventually(function() return #sink:rows("SELECT * FROM ms_sink.t") == 1 end, 30, "full copy")
    -- one source transaction of 40 rows x ~450 bytes: needs at least 9 statements of <= 2048 bytes
    local vals = {}
    for i = 2, 41 do vals[#vals + 1] = string.format("(%d, REPEAT('%s', 450))", i, string.char(96 + i % 26)) end
    src:sql("INSERT INTO ms_db.t VALUES " .. table.concat(vals, ", ") .. ";")
    src:sql("UPDATE ms_db.t SET pad = REPEAT('z', 500) WHERE id BETWEEN 2 AND 21;")
    eventually(function()
      return sink:rows("SELECT COUNT(*) FROM ms_sink.t WHERE LENGTH(pad) >= 450")[1][1] == "40"
    end, 30, "big rows")
    sink:sql("SET GLOBAL general_log = 0;")
    local r = sink:rows([[SELECT COUNT(*), MAX(LENGTH(argument)) FROM mysql.general_log
      WHERE command_type = 'Query' AND argument LIKE '%ms\_sink%' AND argument NOT LIKE '%general\_log%']])
    local n, longest = tonumber(r[1][1]), tonumber(r[1][2])
    local big = tonumber(sink:rows([[SELECT COUNT(*) FROM mysql.general_log WHERE command_type = 'Query'
      AND argument LIKE 'REPLACE INTO `ms\_sink`.`t`%']])[1][1])
    assert.is_true(longest <= 2048, "longest statement " .. longest)
    assert.is_true(big >= 9, "only " .. big .. " REPLACE statements")
    assert.is_true(n > big)
    sink:sql("TRUNCATE mysql.general_log; SET GLOBAL log_output = 'FILE';")
    ok_task({ "drop", "--task-name", "ms", "--source-uri", src.uri })
  end)

  it("--error-handle-option stop: a failing sink write stops the task, err-msg names the table and the error", function()
    src:sql([[CREATE DATABASE eh_db; CREATE TABLE eh_db.s (id INT PRIMARY KEY, amount INT);
      INSERT INTO eh_db.s VALUES (1, 10), (2, 20);]])
    sink:sql([[CREATE DATABASE eh_stop; CREATE TABLE eh_stop.s (id INT PRIMARY KEY, amount INT,
      CONSTRAINT amount_small CHECK (amount < 1000));]])
    local id = create("eh_s", { "--tables", "eh_db.s:eh_stop.s", "--error-handle-option", "stop" })
    local q = "SELECT * FROM eh_stop.s ORDER BY id"
    eventually(function() return #sink:rows(q) == 2 end, 30, "full copy")
    src:sql("INSERT INTO eh_db.s VALUES (3, 5000);")
    local e = eventually(function()
      local x = show("eh_s")
      return x.state == "stopped" and x
    end, 30, "the task stopping")
    assert.matches("eh_stop%.s", e["err-msg"])
    assert.matches("amount_small", e["err-msg"])
    assert.equals("", worker_pids(id))
    assert.same({ { "1", "10" }, { "2", "20" } }, (sink:rows(q)))
    -- it stays stopped (no silent restart): no worker, and nothing here supervises it
    assert.equals("stopped", show("eh_s").state)
    ok_task({ "drop", "--task-name", "eh_s", "--source-uri", src.uri })
  end)

  it("--error-handle-option ignore: the other rows arrive, failing rows are dead letters counted by task show", function()
    -- row 7 already fails in the full copy, rows 4 and 1 later in the binlog phase
    src:sql([[CREATE DATABASE IF NOT EXISTS eh_db; CREATE TABLE eh_db.i (id INT PRIMARY KEY, amount INT); INSERT INTO eh_db.i VALUES (1, 10), (2, 20), (7, 7000);]])
    sink:sql([[CREATE DATABASE eh_ign; CREATE TABLE eh_ign.i (id INT PRIMARY KEY, amount INT,
      CONSTRAINT amount_small CHECK (amount < 1000));]])
    local id = create("eh_i", { "--tables", "eh_db.i:eh_ign.i", "--error-handle-option", "ignore" })
    local q = "SELECT * FROM eh_ign.i ORDER BY id"
    eventually(function() return #sink:rows(q) == 2 end, 30, "full copy")
    src:sql([[INSERT INTO eh_db.i VALUES (3, 30), (4, 5000), (5, 50);
      UPDATE eh_db.i SET amount = 9999 WHERE id = 1; INSERT INTO eh_db.i VALUES (6, 60);]])
    eventually(function() return #sink:rows(q) == 5 end, 30, "the good rows")
    assert.same({ { "1", "10" }, { "2", "20" }, { "3", "30" }, { "5", "50" }, { "6", "60" } }, (sink:rows(q)))
    local e = eventually(function()
      local x = show("eh_i")
      return x["err-msg"]:find("ignored 3 failing row", 1, true) and x
    end, 10, "dead letters counted in task show")
    assert.equals("running", e.state)
    local dl = read(home .. "/tasks/" .. id .. "/dead_letter.jsonl")
    assert.truthy(dl)
    local recs = {}
    for line in dl:gmatch("[^\n]+") do recs[#recs + 1] = cjson.decode(line) end
    assert.equals(3, #recs)
    local keys = {}
    for _, r in ipairs(recs) do
      assert.equals("eh_db.i", r.table)
      assert.matches("amount_small", r.error)
      assert.matches("eh_ign", r.statement)
      keys[#keys + 1] = r.key.id
    end
    table.sort(keys)
    assert.same({ "1", "4", "7" }, keys)
    ok_task({ "drop", "--task-name", "eh_i", "--source-uri", src.uri })
  end)

  it("--state-uri: the state store lives in a MySQL-protocol database; no password on a command line", function()
    src:sql([[CREATE DATABASE su_db; CREATE TABLE su_db.t (id INT PRIMARY KEY); INSERT INTO su_db.t VALUES (1), (2);]])
    local function su(args)
      args[#args + 1] = "--state-uri"
      args[#args + 1] = sink2.uri
      return ok_task(args)
    end
    su({ "create", "--task-name", "su", "--source-uri", src.uri, "--sink-uri", sink.uri, "--tables", "su_db.t:su_sink.t" })
    local q = "SELECT * FROM su_sink.t ORDER BY id"
    eventually(function() return #sink:rows(q) == 2 end, 30, "full copy")
    local list = cjson.decode((su({ "show", "--all", "--source-uri", src.uri })))
    assert.equals(1, #list)
    assert_show_shape(list)
    assert.equals("running", list[1].state)
    local id = list[1]["task-id"]
    assert.same({}, show_all()) -- the local store does not know it
    local st = cjson.decode(sink2:rows("SELECT v FROM mocdc.state WHERE k = 'task/" .. id .. "/status'")[1][1])
    local cmdline = read("/proc/" .. st.pid .. "/cmdline")
    assert.truthy(cmdline and cmdline:find("task-worker", 1, true))
    assert.not_matches(PW, cmdline, 1, true)
    su({ "pause", "--task-name", "su", "--source-uri", src.uri })
    assert.equals("stopped", cjson.decode((su({ "show", "--task-name", "su", "--source-uri", src.uri })))[1].state)
    src:sql("INSERT INTO su_db.t VALUES (3)")
    su({ "resume", "--task-name", "su", "--source-uri", src.uri })
    eventually(function() return #sink:rows(q) == 3 end, 30, "resume")
    su({ "drop", "--task-name", "su", "--source-uri", src.uri })
    assert.equals("0", sink2:rows("SELECT COUNT(*) FROM mocdc.state WHERE k LIKE 'task/" .. id .. "/%'")[1][1])
    assert.equals("0", sink:rows("SELECT COUNT(*) FROM mocdc.watermark WHERE pipeline = 'task:" .. id .. "'")[1][1])
    assert.equals("", worker_pids(id))
  end)

  it("mocdc help, mocdc task --help and mocdc completion bash|zsh", function()
    local rc, out = cli.run({ "help" })
    assert.equals(0, rc)
    assert.matches("mocdc task create|show|pause|resume|restart|drop", out, 1, true)
    assert.matches("completion", out)
    rc, out = cli.run({ "task", "--help" })
    assert.equals(0, rc)
    for _, w in ipairs({ "create", "show", "pause", "resume", "restart", "drop", "--task-name", "--source-uri",
      "--no-full", "--exclude", "--error-handle-option", "MOCDC_SOURCE_PASSWORD" }) do
      assert.matches(w, out, 1, true)
    end
    rc, out = cli.run({ "task", "create", "--help" })
    assert.equals(0, rc)
    assert.matches("--sink-type", out, 1, true)
    for _, sh in ipairs({ "bash", "zsh" }) do
      local err
      rc, out, err = cli.run({ "completion", sh })
      assert.equals(0, rc, err)
      assert.matches("mocdc", out)
      assert.matches("--task-name", out, 1, true)
      local f = home .. "/completion." .. sh
      write(f, out)
      -- the shell runs it (scripts/deps.sh installs zsh): what it completes after
      -- `mocdc task ` and `mocdc task create --sink-type `
      local function complete(words)
        local script, n = nil, select(2, words:gsub("%S+", ""))
        if sh == "bash" then
          script = string.format('. %s; COMP_WORDS=(%s); COMP_CWORD=%d; _mocdc; echo "${COMPREPLY[*]}"',
            f, words, n - 1)
        else
          script = string.format('compdef() { :; }; _files() { :; }; compadd() { [ "$1" = -- ] && shift; ' ..
            'echo "$*"; }; . %s; words=(%s); CURRENT=%d; _mocdc', f, words, n)
        end
        local p = io.popen(sh .. " -c " .. cli.q(script) .. " 2>&1; echo rc=$?")
        local res = p:read("*a")
        p:close()
        return res
      end
      assert.equals("create show pause resume restart drop\nrc=0\n", complete('mocdc task ""'))
      assert.equals("mysql matrixone\nrc=0\n", complete('mocdc task create --sink-type ""'))
    end
    rc, _, out = cli.run({ "completion", "fish" })
    assert.equals(2, rc)
    assert.is_true(cli.one_line(out), out)
  end)
end)
