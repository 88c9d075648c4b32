-- Issue 10 item 4: the MatrixOne DATA BRANCH DIFF path in C. The diff rows are
-- read with a streaming cursor and projected in C into native batches of
-- batchSize rows (split by the flag column), each applied to the sink as it
-- comes; rows become Lua values only for a user transform. Run against MariaDB
-- with spec/helpers/mo_emulator.lua standing in for MatrixOne (its DATA BRANCH
-- DIFF is a join of two time-travel reads of a system-versioned table).
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local emulator = require("spec.helpers.mo_emulator")
local log = require("mocdc.log")
local util = require("mocdc.util.lib")

mdb.describe("MatrixOne DATA BRANCH DIFF from native batches (issue 10 item 4)", function()
  local up, sink, home
  setup(function()
    up = mdb.start({ name = "monat-up" })
    sink = mdb.start({ name = "monat-sink" })
    home = cli.tmpdir()
  end)
  teardown(function() os.execute("rm -rf " .. cli.q(home)) end)

  local function script(name, text)
    local p = home .. "/" .. name .. ".lua"
    local f = assert(io.open(p, "w"))
    f:write(text)
    f:close()
    return p
  end

  -- 200,000 changes (150k inserts, 40k updates, 10k deletes) of ~330-byte rows:
  -- drained into one batch and turned into Lua tables row by row, the diff
  -- alone needs well over 200 MB; read and applied batchSize rows at a time it
  -- needs no more than the copy before it.
  it("applies a 200,000-change diff with peak RSS bounded by batchSize, not by the change count", function()
    up:sql([[CREATE DATABASE big; USE big;
      CREATE TABLE big.t (id INT PRIMARY KEY, a INT NOT NULL, pad VARCHAR(320) NOT NULL) WITH SYSTEM VERSIONING;
      INSERT INTO big.t SELECT seq, seq, REPEAT(MD5(seq), 10) FROM seq_1_to_100000;]])
    local p = script("big", [[
      local emulator = require("spec.helpers.mo_emulator")
      local mo = require("mocdc.engine.matrixone")
      local snapshot = require("mocdc.source.mysql")
      local snaps_file = var "snaps"
      mo.open = function(o)
        local base = snapshot.open(o)
        base.c = emulator.wrap(base.c, { branch_diff = true, snapshots_file = snaps_file,
          pitr = { { "p", "x", "x", "database", "sys", "big", "*", "2", "h" } } })
        return mo.wrap(base.c, o, base)
      end
      local s = load.matrixone { uri = var "source_uri", tables = "big.t:bigmo.t" }
      save.append(s, var "sink_uri", { duration = 1, checkpointLocation = var "checkpoint" })
    ]])
    local args = { "run", p, "--once", "--set", "source_uri=" .. up.uri, "--set", "sink_uri=" .. sink.uri,
      "--set", "checkpoint=" .. home .. "/cp-big", "--set", "snaps=" .. home .. "/big-snapshots.json" }
    local rc, out, err = cli.run(args, { env = { MOCDC_HOME = home } })
    assert.are.equal(0, rc, err)
    assert.matches("^big%.t %-> bigmo%.t: 100000 rows copied in [%d.]+ s\n$", out)
    local copy_rss = tonumber(err:match("peak RSS (%d+) MB"))
    up:sql([[USE big; INSERT INTO big.t SELECT seq, seq, REPEAT(SHA1(seq), 8) FROM seq_100001_to_250000;
      UPDATE big.t SET a = a + 1, pad = REPEAT(SHA1(id), 8) WHERE id <= 40000;
      DELETE FROM big.t WHERE id > 40000 AND id <= 50000;]])
    rc, out, err = cli.run(args, { env = { MOCDC_HOME = home } })
    assert.are.equal(0, rc, err)
    local secs = tonumber(out:match(
      "^big%.t %-> bigmo%.t: 200000 change%(s%) applied %(150000 inserts, 40000 updates, 10000 deletes%) in ([%d.]+) s\n$"))
    assert.is_not_nil(secs, out)
    local rss = tonumber(err:match("peak RSS (%d+) MB"))
    assert.is_not_nil(rss, err)
    print(string.format("\n  200,000-change DATA BRANCH DIFF: peak RSS %d MB (copy of 100,000 rows: %d MB), " ..
      "%.2f s, %d changes/s", rss, copy_rss, secs, math.floor(200000 / secs)))
    assert.is_true(rss < 80, "peak RSS " .. rss .. " MB")
    local q = "SELECT COUNT(*), SUM(CRC32(CONCAT_WS('#', id, a, pad))) FROM "
    assert.are.same(up:rows(q .. "big.t"), sink:rows(q .. "bigmo.t"))
  end)

  -- The iteration's batches and its watermark are one sink transaction: a run
  -- killed while it applies them leaves the sink as it was, and the next run
  -- applies the whole diff again, exactly once.
  it("a run killed in the middle of a diff loses nothing and doubles nothing", function()
    up:sql([[CREATE DATABASE crash; USE crash;
      CREATE TABLE crash.t (id INT PRIMARY KEY, pad VARCHAR(64) NOT NULL) WITH SYSTEM VERSIONING;
      INSERT INTO crash.t SELECT seq, MD5(seq) FROM seq_1_to_20000;]])
    local p = script("crash", [[
      local emulator = require("spec.helpers.mo_emulator")
      local mo = require("mocdc.engine.matrixone")
      local snapshot = require("mocdc.source.mysql")
      local snaps_file = var "snaps"
      mo.open = function(o)
        local base = snapshot.open(o)
        base.c = emulator.wrap(base.c, { branch_diff = true, snapshots_file = snaps_file,
          pitr = { { "p", "x", "x", "database", "sys", "crash", "*", "2", "h" } } })
        return mo.wrap(base.c, o, base)
      end
      local s = load.matrixone { uri = var "source_uri", tables = "crash.t:crashmo.t", batchSize = 1000 }
      save.append(s, var "sink_uri", { duration = 1, checkpointLocation = var "checkpoint" })
    ]])
    local args = { "run", p, "--once", "--set", "source_uri=" .. up.uri, "--set", "sink_uri=" .. sink.uri,
      "--set", "checkpoint=" .. home .. "/cp-crash", "--set", "snaps=" .. home .. "/crash-snapshots.json" }
    local rc, out, err = cli.run(args, { env = { MOCDC_HOME = home } })
    assert.are.equal(0, rc, err)
    up:sql("USE crash; INSERT INTO crash.t SELECT seq, SHA1(seq) FROM seq_20001_to_300000; " ..
      "UPDATE crash.t SET pad = 'u' WHERE id <= 5000; DELETE FROM crash.t WHERE id > 5000 AND id <= 6000")
    local wm_q = "SELECT position FROM mocdc.watermark WHERE source_table = 'crash.t'"
    local wm = sink:rows(wm_q)
    local logf = home .. "/crash.log"
    local pid = cli.spawn(args, logf, { env = { MOCDC_HOME = home } })
    -- mid-apply: the sink transaction has written some of the batches
    cli.eventually(function()
      local r = sink:rows("SELECT MAX(trx_rows_modified) FROM information_schema.innodb_trx")
      return tonumber(r[1][1]) and tonumber(r[1][1]) >= 5000
    end, 60, "the diff's sink transaction to be under way")
    assert.is_not_nil(util.kill(pid, 9))
    assert.is_true(cli.wait(pid, 10))
    -- nothing of the killed iteration is in the sink, the watermark still names the old snapshot
    assert.are.same({ { "20000" } }, sink:rows("SELECT COUNT(*) FROM crashmo.t"))
    assert.are.same({ { "0" } }, sink:rows("SELECT COUNT(*) FROM crashmo.t WHERE pad = 'u'"))
    assert.are.same(wm, sink:rows(wm_q))
    rc, out, err = cli.run(args, { env = { MOCDC_HOME = home } })
    assert.are.equal(0, rc, err)
    assert.matches("^crash%.t %-> crashmo%.t: 286000 change%(s%) applied %(280000 inserts, 5000 updates, " ..
      "1000 deletes%) in [%d.]+ s\n$", out)
    local q = "SELECT COUNT(*), SUM(CRC32(CONCAT_WS('#', id, pad))) FROM "
    assert.are.same(up:rows(q .. "crash.t"), sink:rows(q .. "crashmo.t"))
  end)

  -- In process, to see the statements the source received (the emulator's log).
  it("applies a transform on the DATA BRANCH DIFF path, row by row through copy.transform_row", function()
    local mo = require("mocdc.engine.matrixone")
    local snapshot = require("mocdc.source.mysql")
    local stream = require("mocdc.pipeline.stream")
    local orig_open, last = mo.open, nil
    local snaps = {}
    mo.open = function(o)
      local base = snapshot.open(o)
      last = emulator.wrap(base.c, { branch_diff = true, snapshots = snaps,
        pitr = { { "p", "x", "x", "database", "sys", "tr", "*", "2", "h" } } })
      base.c = last
      return mo.wrap(last, o, base)
    end
    log.level = "warn"
    up:sql([[CREATE DATABASE tr;
      CREATE TABLE tr.o (id INT PRIMARY KEY, customer INT, status VARCHAR(20), amount DECIMAL(10, 2))
        WITH SYSTEM VERSIONING;
      INSERT INTO tr.o VALUES (1, 101, 'new', 1.50), (2, 102, 'new', 2.50), (3, 103, 'paid', 3.50),
        (4, 999, 'new', 4.50), (5, 105, 'paid', 5.50), (6, 106, 'new', 6.50);]])
    -- customer 999 is a test account: never in the sink; status upper-cased; amount renamed
    local function job()
      local s = stream.new({ kind = "matrixone", opts = { uri = up.uri, tables = "tr.o:trmo.o" } })
        :filter(function(r) return r.customer ~= "999" end)
        :map(function(r) r.status = r.status:upper() return r end)
        :rename({ amount = "total" })
      return { stream = s, target = sink.uri, opts = { duration = 1, checkpointLocation = home .. "/cp-tr" } }
    end
    local function expected()
      local out = {}
      for _, r in ipairs(up:rows("SELECT id, customer, UPPER(status), amount FROM tr.o WHERE customer <> 999 ORDER BY id")) do
        out[#out + 1] = r
      end
      return out
    end
    local function sink_rows() return sink:rows("SELECT id, customer, status, total FROM trmo.o ORDER BY id") end
    local ok, err = pcall(function()
      local s = mo.run(job(), { name = "mo_tr" }, { once = true })[1]
      assert.is_true(s.full)
      assert.are.same(expected(), sink_rows())
      assert.are.equal(5, #sink_rows())
      up:sql([[INSERT INTO tr.o VALUES (7, 107, 'new', 7.50), (8, 999, 'new', 8.50);
        UPDATE tr.o SET status = 'shipped' WHERE id = 1;
        UPDATE tr.o SET customer = 999 WHERE id = 2;
        UPDATE tr.o SET customer = 104 WHERE id = 4;
        DELETE FROM tr.o WHERE id IN (3, 8);]])
      last.log = {}
      s = mo.run(job(), { name = "mo_tr" }, { once = true })[1]
      -- the diff rows: 1 insert (8 was deleted again: in neither snapshot), 3 updates, 1 delete
      assert.are.same({ 1, 3, 1 }, { s.stats.inserts, s.stats.updates, s.stats.deletes })
      local diffs, sums = 0, 0
      for _, x in ipairs(last.log) do
        if x:find("^DATA BRANCH DIFF `tr`%.`o`") then diffs = diffs + 1 end
        if x:find("COUNT(*)", 1, true) then sums = sums + 1 end
      end
      assert.are.equal(1, diffs)
      assert.are.equal(0, sums) -- no chunk checksums
      -- 1 SHIPPED, 2 moved to customer 999 (deleted), 3 deleted, 4 moved out of 999 (arrives), 7 inserted
      assert.are.same(expected(), sink_rows())
      assert.are.same({ "1", "4", "5", "6", "7" }, (function()
        local ids = {}
        for _, r in ipairs(sink_rows()) do ids[#ids + 1] = r[1] end
        return ids
      end)())
      assert.are.equal("SHIPPED", sink_rows()[1][3])
    end)
    mo.open = orig_open
    log.level = "info"
    assert(ok, err)
  end)
end)
