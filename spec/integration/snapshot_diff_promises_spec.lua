-- Issue 9: the README's snapshot-diff options do what it says, observed on the
-- source server itself (its general log) while `mocdc run` diffs:
--   checksum = "md5"      the chunk sums are MD5-based (and still find changes)
--   checksumParallel = 1  one source connection does every sum, no LOCK TABLES
--   noKeyMaxRows          a keyless table over the limit is refused with one line
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

mdb.describe("snapshot diff: README options observed on the server (issue 9)", function()
  local src, sink, dir

  setup(function()
    src = mdb.start({ name = "diffp-source" })
    sink = mdb.start({ name = "diffp-sink" })
    dir = cli.tmpdir()
    src:sql("CREATE DATABASE shop; SET GLOBAL log_output = 'TABLE'")
  end)
  teardown(function()
    if os.getenv("MOCDC_TEST_KEEP") ~= "1" then os.execute("rm -rf " .. dir) end
  end)

  -- `mocdc run SCRIPT --once` of a snapshot-diff pipeline; source options `extra`.
  local function run(name, tables, extra)
    local script = dir .. "/" .. name .. ".lua"
    write(script, string.format([[
      local s = load.snapshot { uri = %q, tables = %q %s }
      save.append(s, %q, { duration = 1, checkpointLocation = %q })
    ]], src.uri, tables, extra or "", sink.uri, dir .. "/cp-" .. name))
    return cli.run({ "run", script, "--once" }, { env = { MOCDC_HOME = dir } })
  end

  -- run() with the source's general log on; returns rc, stderr and the
  -- logged (thread_id, command_type, argument) rows of that run
  local function logged_run(name, tables, extra)
    src:sql("SET GLOBAL general_log = 0; TRUNCATE mysql.general_log; SET GLOBAL general_log = 1")
    local rc, _, err = run(name, tables, extra)
    src:sql("SET GLOBAL general_log = 0")
    -- the spec's own client connections are those that switched the log
    local rows = src:rows("SELECT thread_id, command_type, argument FROM mysql.general_log WHERE thread_id NOT IN " ..
      "(SELECT thread_id FROM mysql.general_log WHERE argument LIKE '%general_log%') ORDER BY event_time")
    return rc, err, rows
  end

  local function same(tbl_src, tbl_dst, order)
    local a = src:rows("SELECT * FROM " .. tbl_src .. " ORDER BY " .. order)
    local b = sink:rows("SELECT * FROM " .. tbl_dst .. " ORDER BY " .. order)
    assert.equals(#a, #b)
    assert.same(a, b)
    return #a
  end

  -- the chunk-sum statements of a logged run, and the threads that ran them
  local function sums_of(rows)
    local stmts, threads, nthreads = {}, {}, 0
    for _, r in ipairs(rows) do
      if r[2] == "Query" and r[3]:find("^SELECT %d+, COUNT%(%*%), COALESCE%(SUM%(") then
        stmts[#stmts + 1] = r[3]
        if not threads[r[1]] then threads[r[1]] = true nthreads = nthreads + 1 end
      end
    end
    return stmts, nthreads
  end

  local function count(rows, kind, pattern)
    local n = 0
    for _, r in ipairs(rows) do
      if r[2] == kind and (not pattern or r[3]:find(pattern)) then n = n + 1 end
    end
    return n
  end

  it("checksum = \"md5\": the chunk sums are sums of 64 bits of an MD5 per row, and find changes", function()
    src:sql([[CREATE TABLE shop.m (id INT PRIMARY KEY, v VARCHAR(20) NOT NULL, n INT NULL);
      INSERT INTO shop.m SELECT seq, CONCAT('v', seq), IF(seq % 7 = 0, NULL, seq) FROM seq_1_to_2000;
      CREATE TABLE shop.c LIKE shop.m; INSERT INTO shop.c SELECT * FROM shop.m;]], "shop")
    local opts = ", diffChunkRows = 100, checksum = 'md5'"
    local rc, _, err = run("md5", "shop.m:copy.m", opts)
    assert.equals(0, rc, err)
    assert.equals(2000, same("shop.m", "copy.m", "id"))
    -- two rows exchanging values (one chunk), a NULL becoming a value, a delete
    src:sql([[UPDATE shop.m SET v = IF(id = 150, 'v151', 'v150') WHERE id IN (150, 151);
      UPDATE shop.m SET n = 0 WHERE id = 700; DELETE FROM shop.m WHERE id = 1999;]], "shop")
    local log
    rc, err, log = logged_run("md5", "shop.m:copy.m", opts)
    assert.equals(0, rc, err)
    assert.equals(1999, same("shop.m", "copy.m", "id"))
    local stmts = sums_of(log)
    assert.is_true(#stmts > 0, "no chunk sums were logged")
    for _, s in ipairs(stmts) do
      assert.matches("COALESCE(SUM(CAST(CONV(SUBSTRING(MD5(CONCAT_WS('#', ", s, 1, true)
      assert.matches(", 1, 16), 16, 10) AS UNSIGNED)), 0)", s, 1, true)
      assert.not_matches("CRC32(", s, 1, true)
    end
    -- the stored object list holds those sums: one 64-bit MD5 slice per row, summed
    local state = require("cjson").decode(sink:rows("SELECT state FROM mocdc.diff_state WHERE source_table LIKE 'shop.m -> %'")[1][1])
    assert.equals("md5,", state.sig:sub(1, 4))
    local hi = state.bounds[1][1]
    local want = src:rows("SELECT COUNT(*), SUM(CAST(CONV(SUBSTRING(MD5(CONCAT_WS('#', id, v, LENGTH(v), n, " ..
      "CONCAT(ISNULL(id), ISNULL(v), ISNULL(n)))), 1, 16), 16, 10) AS UNSIGNED)) FROM shop.m WHERE id < " .. hi)[1]
    assert.same({ tonumber(want[1]), want[2] }, { state.n[1], state.s[1] })

    -- the default (crc) on the same data, for contrast: CRC32 rows, no MD5
    rc, err = run("crc", "shop.c:copy.c", ", diffChunkRows = 100")
    assert.equals(0, rc, err)
    src:sql("UPDATE shop.c SET n = 0 WHERE id = 700", "shop")
    rc, err, log = logged_run("crc", "shop.c:copy.c", ", diffChunkRows = 100")
    assert.equals(0, rc, err)
    stmts = sums_of(log)
    assert.is_true(#stmts > 0, "no chunk sums were logged")
    for _, s in ipairs(stmts) do
      assert.matches("CRC32(CONCAT_WS('#', ", s, 1, true)
      assert.not_matches("MD5(", s, 1, true)
    end
    same("shop.c", "copy.c", "id")
  end)

  it("checksumParallel = 1: one source connection sums every chunk, without LOCK TABLES", function()
    src:sql([[CREATE TABLE shop.p (id INT PRIMARY KEY, v INT NOT NULL);
      INSERT INTO shop.p SELECT seq, seq FROM seq_1_to_3000;
      CREATE TABLE shop.p2 LIKE shop.p; INSERT INTO shop.p2 SELECT * FROM shop.p;]], "shop")
    local function change(tbl) src:sql("UPDATE " .. tbl .. " SET v = -v WHERE id IN (5, 1500, 2999)", "shop") end

    -- the default, 2: two connections sum (the log can tell), one more takes the lock
    local rc, _, err = run("par2", "shop.p2:copy.p2", ", diffChunkRows = 20")
    assert.equals(0, rc, err)
    change("shop.p2")
    local log
    rc, err, log = logged_run("par2", "shop.p2:copy.p2", ", diffChunkRows = 20")
    assert.equals(0, rc, err)
    local stmts, threads = sums_of(log)
    assert.is_true(#stmts >= 2)
    assert.equals(2, threads)
    assert.equals(1, count(log, "Query", "^LOCK TABLES `shop`.`p2` READ"))
    assert.equals(3, count(log, "Connect"))
    same("shop.p2", "copy.p2", "id")

    local opts = ", diffChunkRows = 20, checksumParallel = 1"
    rc, err = run("par1", "shop.p:copy.p", opts)
    assert.equals(0, rc, err)
    change("shop.p")
    rc, err, log = logged_run("par1", "shop.p:copy.p", opts)
    assert.equals(0, rc, err)
    stmts, threads = sums_of(log)
    assert.is_true(#stmts >= 2, "the 150 chunks are summed in several statements")
    assert.equals(1, threads)
    assert.equals(0, count(log, "Query", "LOCK TABLES"))
    assert.equals(1, count(log, "Connect"))
    assert.equals(3000, same("shop.p", "copy.p", "id"))
  end)

  it("noKeyMaxRows: a keyless table over the limit is refused with one line, nothing applied", function()
    src:sql([[CREATE TABLE shop.nk (a INT, b VARCHAR(5));
      INSERT INTO shop.nk SELECT seq % 10, 'x' FROM seq_1_to_30;]], "shop")
    local opts = ", noKeyMaxRows = 30"
    local rc, _, err = run("nk", "shop.nk:copy.nk", opts)
    assert.equals(0, rc, err) -- the full copy streams: no limit
    src:sql("INSERT INTO shop.nk VALUES (1, 'x'), (NULL, NULL)", "shop")
    rc, _, err = run("nk", "shop.nk:copy.nk", opts)
    assert.equals(1, rc, err)
    assert.is_true(cli.one_line(err), err)
    assert.equals("mocdc: error: shop.nk has no primary key and 32 rows: diffing a keyless table holds it in " ..
      "memory (limit noKeyMaxRows = 30); add a primary key or give idCols", err:match("([^\n]*)\n$"))
    assert.equals("30", sink:rows("SELECT COUNT(*) FROM copy.nk")[1][1])
    -- within the limit, the same table is diffed (duplicates and NULLs kept)
    rc, _, err = run("nk", "shop.nk:copy.nk", ", noKeyMaxRows = 32")
    assert.equals(0, rc, err)
    assert.equals(32, same("shop.nk", "copy.nk", "a, b"))
  end)
end)
