-- Issue 9, promise "exit 130 interrupted (SIGINT/SIGTERM; stops at a safe
-- point)": for `mocdc run` of a full copy in progress and of a streaming binlog
-- pipeline, SIGINT and SIGTERM exit exactly 130 with one line, the sink holds
-- whole chunks / whole source transactions only, its watermark matches them,
-- and the next run continues from there (nothing lost, nothing doubled).
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local cjson = require("cjson")
local util = require("mocdc.util.lib")

local ROWS = 20000

local function unhex(h) return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end)) end

mdb.describe("issue 9: SIGINT and SIGTERM exit 130 at a safe point", function()
  local src, sink, home, copy_script
  setup(function()
    src = mdb.start({ name = "sig-source", binlog = true })
    sink = mdb.start({ name = "sig-sink" })
    home = cli.tmpdir()
    src:sql("CREATE DATABASE sig; CREATE TABLE sig.big (id INT PRIMARY KEY, v VARCHAR(20)); " ..
      "INSERT INTO sig.big SELECT seq, CONCAT('v', seq) FROM sig.seq_1_to_" .. ROWS .. ";" ..
      "CREATE TABLE sig.k (id INT PRIMARY KEY AUTO_INCREMENT, v INT); CREATE TABLE sig.nk (v INT, w INT);")
    -- a copy slow enough to be interrupted: 200-row batches (one sink
    -- transaction each), the transform pausing 20 ms per batch (~2 s in all)
    copy_script = home .. "/slow_copy.lua"
    local f = assert(io.open(copy_script, "w"))
    f:write([[
local util = require("mocdc.util.lib")
local s = load.snapshot { uri = var "source_uri", tables = "sig.big:sigdst.big", batchSize = 200 }
save.append(s:map(function(r)
  if tonumber(r.id) % 200 == 0 then util.sleep(0.02) end
  return r
end), var "sink_uri", { checkpointLocation = var "checkpoint" })
]])
    f:close()
  end)
  teardown(function() os.execute("rm -rf " .. cli.q(home)) end)

  local function read(path)
    local f = io.open(path)
    if not f then return "" end
    local s = f:read("*a")
    f:close()
    return s
  end
  local function count(sql) return tonumber(sink:rows(sql)[1][1]) end

  for _, sig in ipairs({ { 2, "SIGINT" }, { 15, "SIGTERM" } }) do
    it(sig[2] .. " during a full copy: 130, whole chunks, the watermark at the last one; the next run resumes", function()
      sink:sql("DROP DATABASE IF EXISTS sigdst; DROP DATABASE IF EXISTS mocdc")
      local cp, logf = home .. "/cp-copy-" .. sig[1], home .. "/copy-" .. sig[1] .. ".log"
      local args = { "run", copy_script, "--once", "--set", "source_uri=" .. src.uri, "--set", "sink_uri=" .. sink.uri,
        "--set", "checkpoint=" .. cp }
      local pid, rc = cli.spawn_rc(args, logf, { env = { MOCDC_HOME = home } })
      cli.eventually(function() return count("SELECT COUNT(*) FROM sigdst.big") > 0 end, 30, "the first chunk")
      util.kill(pid, sig[1])
      assert.are.equal(130, cli.eventually(rc, 30, "mocdc run exiting"), read(logf))
      local log = read(logf)
      assert.is_true(cli.one_line(log), log)
      assert.are.equal("mocdc: error: interrupted; the copy resumes from the last committed chunk\n",
        log:match("mocdc: error: [^\n]*\n$"))
      -- the signal landed mid-copy; the sink holds rows 1..n exactly, n a whole number of batches
      local n = count("SELECT COUNT(*) FROM sigdst.big")
      assert.is_true(n > 0 and n < ROWS, "rows at the interruption: " .. n)
      assert.are.equal(n, count("SELECT COALESCE(MAX(id), 0) FROM sigdst.big"))
      assert.are.equal(0, n % 200)
      local wm = sink:rows("SELECT phase, full_key FROM mocdc.watermark WHERE source_table = 'sig.big'")
      assert.are.equal(1, #wm)
      assert.are.equal("full", wm[1][1])
      assert.are.equal(tostring(n), unhex(cjson.decode(wm[1][2]).hex[1]))
      -- the next run copies exactly the rest
      local code, out, err = cli.run(args, { env = { MOCDC_HOME = home } })
      assert.are.equal(0, code, err)
      assert.matches("^sig%.big %-> sigdst%.big: " .. (ROWS - n) .. " rows copied in [%d.]+ s\n$", out)
      assert.are.equal(ROWS, count("SELECT COUNT(*) FROM sigdst.big"))
      assert.are.equal(ROWS * (ROWS + 1) / 2, count("SELECT SUM(id) FROM sigdst.big"))
    end)
  end

  it("SIGINT, then SIGTERM, of a streaming binlog pipeline: 130 each time, whole transactions, resumed exactly", function()
    sink:sql("DROP DATABASE IF EXISTS sigb; DROP DATABASE IF EXISTS mocdc")
    local cp = home .. "/cp-binlog"
    local args = { "run", cli.root .. "/pipelines/binlog_to_mysql.lua", "--set", "source_uri=" .. src.uri,
      "--set", "sink_uri=" .. sink.uri, "--set", "tables=sig.k:sigb.k,sig.nk:sigb.nk", "--set", "checkpoint=" .. cp }
    local txns = 0
    local function txn() -- one source transaction: 5 rows into each table (nk has no key: a replay would double)
      txns = txns + 1
      src:sql(string.format("START TRANSACTION; INSERT INTO sig.k (v) VALUES (%d),(%d),(%d),(%d),(%d); " ..
        "INSERT INTO sig.nk VALUES (%d,1),(%d,2),(%d,3),(%d,4),(%d,5); COMMIT;", txns, txns, txns, txns, txns,
        txns, txns, txns, txns, txns))
    end
    for round, sig in ipairs({ { 2, "SIGINT" }, { 15, "SIGTERM" } }) do
      local logf = home .. "/binlog-" .. sig[1] .. ".log"
      local pid, rc = cli.spawn_rc(args, logf, { env = { MOCDC_HOME = home } })
      local before = txns
      for _ = 1, 5 do txn() end
      -- streaming: the first of this round's transactions has arrived
      cli.eventually(function() return count("SELECT COUNT(*) FROM sigb.nk") > before * 5 end, 30,
        "round " .. round .. " streaming")
      for _ = 1, 5 do txn() end -- changes keep arriving while the signal lands
      util.kill(pid, sig[1])
      assert.are.equal(130, cli.eventually(rc, 30, "mocdc run exiting on " .. sig[2]), read(logf))
      local log = read(logf)
      assert.is_true(cli.one_line(log), log)
      assert.are.equal("mocdc: error: interrupted by " .. sig[2] .. " at a safe point; the next run continues " ..
        "from there\n", log:match("mocdc: error: [^\n]*\n$"))
      -- whole source transactions only, never more than the source has
      local nk = count("SELECT COUNT(*) FROM sigb.nk")
      assert.are.equal(0, nk % 5)
      assert.is_true(nk > before * 5 and nk <= txns * 5, "nk rows " .. nk .. " of " .. txns * 5)
      assert.are.equal(nk, count("SELECT COUNT(*) FROM sigb.k"))
      for _ = 1, 3 do txn() end -- committed while mocdc is down
    end
    local code, out, err = cli.run({ args[1], args[2], args[3], args[4], args[5], args[6], args[7], args[8], args[9],
      args[10], "--once" }, { env = { MOCDC_HOME = home } })
    assert.are.equal(0, code, err)
    assert.matches("sig%.nk %-> sigb%.nk: %d+ change%(s%) applied, in sync at ", out)
    assert.are.same(src:rows("SELECT v, w FROM sig.nk ORDER BY v, w"), sink:rows("SELECT v, w FROM sigb.nk ORDER BY v, w"))
    assert.are.same(src:rows("SELECT id, v FROM sig.k ORDER BY id"), sink:rows("SELECT id, v FROM sigb.k ORDER BY id"))
    assert.are.equal(txns * 5, count("SELECT COUNT(*) FROM sigb.nk"))
  end)
end)
