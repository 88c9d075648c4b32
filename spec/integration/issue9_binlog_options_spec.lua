-- Issue 9: the binlog source's README options, each observed on real servers
-- through `mocdc run` (a pipeline that passes every option from --set):
--   bingLogNamePrefix + binlogIndex + binlogFileOffset  start there, no full copy
--   startTs / endTs     (UTC) changes before startTs not applied; the pipeline stops after endTs
--   serverId            the replica id the source sees: a second reader with it is a clash, reported as such
--   heartbeat           seconds between the source's heartbeats; on heartbeats alone (no transaction
--                       at all) the watermark follows the source into a new binlog file
--   maxTxnRows          a sink transaction is committed once it holds that many rows
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local cjson = require("cjson")
local util = require("mocdc.util.lib")

local PIPELINE = [[
set { streamName = var("stream", "p") }
local o = { uri = var "source_uri", tables = var "tables" }
for _, k in ipairs({ "bingLogNamePrefix", "binlogIndex", "binlogFileOffset", "startTs", "endTs", "serverId",
    "heartbeat", "maxTxnRows", "noFull" }) do o[k] = vars[k] end
local so = { checkpointLocation = var "cp" }
for _, k in ipairs({ "flushInterval", "duration" }) do so[k] = vars[k] end
save.append(load.binlog(o), var "sink_uri", so)
]]

mdb.describe("binlog source options (issue 9)", function()
  local src, sink, dir, script
  setup(function()
    src = mdb.start({ name = "blopt-source", binlog = true })
    sink = mdb.start({ name = "blopt-sink" })
    dir = cli.tmpdir()
    script = dir .. "/p.lua"
    local f = assert(io.open(script, "w"))
    f:write(PIPELINE)
    f:close()
    sink:sql("SET GLOBAL log_output = 'TABLE'")
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  local function args(name, tables, sets)
    local a = { "run", script, "--set", "source_uri=" .. src.uri, "--set", "sink_uri=" .. sink.uri,
      "--set", "tables=" .. tables, "--set", "cp=" .. dir .. "/" .. name, "--set", "stream=" .. name }
    for k, v in pairs(sets) do a[#a + 1] = "--set" a[#a + 1] = k .. "=" .. tostring(v) end
    return a
  end
  -- a run that must end by itself: killed (SIGTERM) after `limit` s
  local function run_bounded(a, limit, env)
    local parts = { "timeout", tostring(limit) }
    for k, v in pairs(env or {}) do table.insert(parts, 1, k .. "=" .. cli.q(v)) table.insert(parts, 1, "env") end
    parts[#parts + 1] = cli.q(cli.exe)
    for _, x in ipairs(a) do parts[#parts + 1] = cli.q(x) end
    local errf = os.tmpname()
    local p = io.popen(table.concat(parts, " ") .. " >/dev/null 2>" .. errf .. " </dev/null; echo $?")
    local rc = tonumber(p:read("*a"):match("(%d+)%s*$"))
    p:close()
    local f = io.open(errf)
    local err = f:read("*a")
    f:close()
    os.remove(errf)
    return rc, err
  end
  local function master()
    local r = src:rows("SHOW MASTER STATUS")[1]
    return r[1], tonumber(r[2])
  end
  local function wm(name)
    local ok, r = pcall(sink.rows, sink, "SELECT position FROM mocdc.watermark WHERE pipeline = '" .. name ..
      "' AND phase = 'cdc'")
    return ok and r[1] and cjson.decode(r[1][1]) or nil
  end
  local function rows(q) return (sink:rows(q)) end

  it("bingLogNamePrefix + binlogIndex + binlogFileOffset: starts there, no full copy", function()
    src:sql([[CREATE DATABASE bp; CREATE TABLE bp.t (id INT PRIMARY KEY, v INT); INSERT INTO bp.t VALUES (1, 1), (2, 2);]])
    local file, pos = master()
    src:sql("INSERT INTO bp.t VALUES (3, 3); UPDATE bp.t SET v = 20 WHERE id = 2;")
    local prefix, idx = file:match("^(.*)%.(%d+)$")
    local a = args("bp", "bp.t:bps.t", { bingLogNamePrefix = prefix, binlogIndex = tonumber(idx),
      binlogFileOffset = pos })
    a[#a + 1] = "--once"
    local rc, _, err = cli.run(a)
    assert.equals(0, rc, err)
    assert.same({ { "2", "20" }, { "3", "3" } }, rows("SELECT id, v FROM bps.t ORDER BY id"))
    -- the prefix is part of the file name: another prefix names a file the source does not have
    a = args("bp2", "bp.t:bps2.t", { bingLogNamePrefix = "nope", binlogIndex = tonumber(idx), binlogFileOffset = pos })
    a[#a + 1] = "--once"
    rc, _, err = cli.run(a)
    assert.equals(1, rc, err)
    assert.is_true(cli.one_line(err), err)
    assert.truthy(err:find(string.format("nope.%06d", tonumber(idx)), 1, true), err)
  end)

  it("startTs / endTs (UTC, whatever mocdc's time zone): only changes inside the window; then it stops", function()
    -- the binlog events carry the writer's SET TIMESTAMP: a window in 2021, changes 10 minutes either side
    local function at(s)
      local y, mo, d, h, mi = s:match("^(%d+)-(%d+)-(%d+) (%d+):(%d+)$")
      local days = 0
      for yy = 1970, tonumber(y) - 1 do days = days + ((yy % 4 == 0 and (yy % 100 ~= 0 or yy % 400 == 0)) and 366 or 365) end
      local mdays = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
      local leap = (tonumber(y) % 4 == 0 and (tonumber(y) % 100 ~= 0 or tonumber(y) % 400 == 0))
      for m = 1, tonumber(mo) - 1 do days = days + mdays[m] + ((m == 2 and leap) and 1 or 0) end
      days = days + tonumber(d) - 1
      return "SET TIMESTAMP = " .. (days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60) .. ";"
    end
    src:sql(at("2020-12-31 23:50") .. [[CREATE DATABASE ts; CREATE TABLE ts.t (id INT PRIMARY KEY, v VARCHAR(20));
      INSERT INTO ts.t VALUES (1, 'before');]] ..
      at("2021-01-01 00:10") .. "INSERT INTO ts.t VALUES (2, 'inside'); UPDATE ts.t SET v = 'updated' WHERE id = 1;" ..
      at("2021-01-01 23:50") .. "INSERT INTO ts.t VALUES (3, 'late inside');" ..
      at("2021-01-02 00:10") .. "INSERT INTO ts.t VALUES (4, 'after'); UPDATE ts.t SET v = 'after' WHERE id = 2;" ..
      "SET TIMESTAMP = DEFAULT; INSERT INTO ts.t VALUES (5, 'now');")
    -- no --once: the pipeline must stop by itself at endTs (timeout's SIGTERM would exit 130)
    local rc, err = run_bounded(args("ts", "ts.t:tss.t", { startTs = "2021-01-01 00:00:00",
      endTs = "2021-01-02 00:00:00" }), 60, { TZ = "Asia/Kathmandu" }) -- +05:45 now, +05:30 in 1970
    assert.equals(0, rc, err)
    assert.truthy(err:find("reached endTs 2021-01-02 00:00:00", 1, true), err)
    assert.same({ { "1", "updated" }, { "2", "inside" }, { "3", "late inside" } },
      rows("SELECT id, v FROM tss.t ORDER BY id"))
  end)

  it("serverId: the source sees that replica id; a second reader with it is reported as a clash", function()
    src:sql("CREATE DATABASE sid; CREATE TABLE sid.t (id INT PRIMARY KEY); INSERT INTO sid.t VALUES (1);")
    local loga, logb = dir .. "/sid-a.log", dir .. "/sid-b.log"
    local sh = function(a, logf)
      local parts = { cli.q(cli.exe) }
      for _, x in ipairs(a) do parts[#parts + 1] = cli.q(x) end
      local p = io.popen("sh -c " .. cli.q(table.concat(parts, " ") .. " >>" .. cli.q(logf) .. " 2>&1 </dev/null; " ..
        "echo \"exit $?\" >>" .. cli.q(logf)) .. " >/dev/null 2>&1 & echo $!")
      local pid = tonumber(p:read("*a"))
      p:close()
      return pid
    end
    local pa = sh(args("sida", "sid.t:sida.t", { serverId = 4242, heartbeat = 1 }), loga)
    local function dumps()
      return tonumber(src:rows("SELECT COUNT(*) FROM information_schema.processlist WHERE command LIKE 'Binlog Dump%'")[1][1])
    end
    cli.eventually(function() return dumps() >= 1 and wm("sida") end, 30, "pipeline A streaming")
    -- registered as a replica: the source lists it with that id
    local hosts = src:rows("SHOW SLAVE HOSTS")
    assert.same({ "4242", "mocdc" }, { hosts[1] and hosts[1][1], hosts[1] and hosts[1][2] })
    local f = io.open(loga):read("*a")
    assert.truthy(f:find("(server_id 4242)", 1, true), f)
    local pb = sh(args("sidb", "sid.t:sidb.t", { serverId = 4242, heartbeat = 1 }), logb)
    local out = cli.eventually(function()
      local s = io.open(loga):read("*a")
      return s:find("\nexit %d+\n") and s
    end, 30, "pipeline A dropped by the source")
    util.kill(pb, 15)
    cli.wait(pb, 10)
    util.kill(pa, 15)
    assert.truthy(out:find("\nexit 1\n"), out)
    local line = out:match("(mocdc: error: [^\n]*)\n")
    assert.truthy(line, out)
    assert.truthy(line:find(string.format("another replica connected to source 127.0.0.1:%d with the same " ..
      "server_id 4242, and the source dropped this binlog stream; give every mocdc pipeline and replica a " ..
      "unique server_id", src.port), 1, true), line)
  end)

  it("heartbeat: on heartbeats alone the watermark follows the source into a new binlog file, every N s", function()
    src:sql("CREATE DATABASE hb; CREATE TABLE hb.t (id INT PRIMARY KEY); INSERT INTO hb.t VALUES (1);")
    local function follow(name, heartbeat, within)
      local logf = dir .. "/" .. name .. ".log"
      local pid = cli.spawn(args(name, "hb.t:" .. name .. ".t", { heartbeat = heartbeat }), logf)
      local before = cli.eventually(function() return wm(name) end, 30, name .. " streaming")
      -- no transaction at all: only a new binlog file (a backup's FLUSH LOGS)
      src:sql("FLUSH BINARY LOGS")
      local file = master()
      assert.are_not.equal(file, before.file)
      local t0, moved = util.mono(), nil
      while util.mono() - t0 < within do
        local w = wm(name)
        if w.file == file then moved = util.mono() - t0 break end
        util.sleep(0.1)
      end
      -- SIGKILL: a stop request waits for the next event or heartbeat
      util.kill(pid, 9)
      assert.is_true(cli.wait(pid, 10), name .. " still running: " .. io.open(logf):read("*a"))
      return moved, file
    end
    local moved, file = follow("hb1", 1, 10)
    assert.is_not_nil(moved, "the watermark stayed in the old binlog file with heartbeat = 1")
    -- the old files can go: the pipeline resumes from the new one
    src:sql("PURGE BINARY LOGS TO '" .. file .. "'")
    local a = args("hb1", "hb.t:hb1.t", { heartbeat = 1 })
    a[#a + 1] = "--once"
    local rc, _, err = cli.run(a)
    assert.equals(0, rc, err)
    -- heartbeat = 3: the source's first heartbeat comes 3 s after the new file's events (the default,
    -- 1 s, would move the watermark after ~1 s)
    local moved3 = follow("hb3", 3, 15)
    io.stderr:write(string.format("\nwatermark in the new binlog file after %.2f s (heartbeat = 1), %s s " ..
      "(heartbeat = 3)\n", moved, moved3 and string.format("%.2f", moved3) or "never"))
    assert.is_not_nil(moved3, "the watermark stayed in the old binlog file with heartbeat = 3")
    assert.is_true(moved3 >= 2.5, string.format("moved after %.2f s with heartbeat = 3", moved3))
  end)

  it("maxTxnRows: a sink transaction is committed once it holds that many rows", function()
    src:sql("CREATE DATABASE mt; CREATE TABLE mt.t (id INT PRIMARY KEY, v INT); INSERT INTO mt.t VALUES (0, 0);")
    local a = args("mt", "mt.t:mts.t", { maxTxnRows = 10, flushInterval = 600 })
    a[#a + 1] = "--once"
    local rc, _, err = cli.run(a)
    assert.equals(0, rc, err)
    -- 20 source transactions of 10 rows, read as one backlog by the next run
    local stmts = {}
    for i = 0, 19 do
      stmts[#stmts + 1] = string.format("INSERT INTO mt.t SELECT seq, %d FROM seq_%d_to_%d;", i, i * 10 + 1, i * 10 + 10)
    end
    src:sql(table.concat(stmts, "\n"), "mt")
    sink:sql("TRUNCATE mysql.general_log; SET GLOBAL general_log = 1")
    rc, _, err = cli.run(a)
    sink:sql("SET GLOBAL general_log = 0")
    assert.equals(0, rc, err)
    assert.equals("201", sink:rows("SELECT COUNT(*) FROM mts.t")[1][1])
    -- one sink commit (one watermark write) per 10 rows
    local n = sink:rows([[SELECT COUNT(*) FROM mysql.general_log WHERE command_type = 'Query'
      AND argument LIKE 'REPLACE INTO `mocdc`.`watermark`%']])[1][1]
    assert.equals("20", n)
  end)
end)
