-- Issue 5 step 1: snapshot diffing ("object list" chunk checksums) between two
-- MariaDB servers. The engine runs in-process (mocdc.source.diff.run, what
-- `mocdc run` calls for load.snapshot{...} with a duration), so each
-- iteration's statistics — rows and bytes fetched — can be asserted.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local log = require("mocdc.log")

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

mdb.describe("snapshot diffing (issue 5)", function()
  local src, sink, dir
  local engine = require("mocdc.engine.snapdiff")
  local pipeline = require("mocdc.pipeline.env")

  setup(function()
    src = mdb.start({ name = "diff-source" })
    sink = mdb.start({ name = "diff-sink" })
    dir = cli.tmpdir()
    src:sql("CREATE DATABASE shop")
    log.level = "warn"
  end)
  teardown(function()
    log.level = "info"
    os.execute("rm -rf " .. dir)
  end)

  -- One iteration (or the full copy) of a pipeline declared with these options.
  local function iterate(name, tables, extra_src, extra_save)
    local script = dir .. "/" .. name .. ".lua"
    write(script, string.format([[
      local s = load.snapshot { uri = %q, tables = %q %s }
      save.append(s, %q, { duration = 1, checkpointLocation = %q %s })
    ]], src.uri, tables, extra_src or "", sink.uri, dir .. "/cp-" .. name, extra_save or ""))
    local ctx = pipeline.declare(script, {})
    local summary = engine.run(ctx.jobs[1], ctx, { once = true })
    local by = {}
    for _, s in ipairs(summary) do by[s.src] = s end
    return by
  end

  -- Three iterations of a pipeline script (the copy, then two diffs), with
  -- change() run after the first; returns the log lines (at `level`) and each
  -- iteration's stats.
  local function three_iterations(script, change, level)
    local lines, stats = {}, {}
    local old_out, old_level = log.out, log.level
    log.out = { write = function(_, ...) lines[#lines + 1] = table.concat({ ... }) end, flush = function() end }
    log.level = level or old_level
    local ok, err = pcall(function()
      local ctx = pipeline.declare(script, {})
      ctx.on_iteration = function(summary, i)
        stats[i] = summary[1].stats
        if i == 1 then change() end
      end
      engine.run(ctx.jobs[1], ctx, { iterations = 3 })
    end)
    log.out, log.level = old_out, old_level
    assert(ok, err)
    return lines, stats
  end

  -- shop.<name>: 300 rows (id, v) and an indexed updateColumn `updated`
  local function upd_table(name)
    src:sql(string.format([[CREATE TABLE shop.%s (id INT PRIMARY KEY, v INT NOT NULL,
        updated TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), KEY (updated));
      INSERT INTO shop.%s (id, v) SELECT seq, seq FROM seq_1_to_300;]], name, name), "shop")
  end

  local function same(tbl_src, tbl_dst, order)
    local a = src:rows("SELECT * FROM " .. tbl_src .. " ORDER BY " .. order)
    local b = sink:rows("SELECT * FROM " .. tbl_dst .. " ORDER BY " .. order)
    assert.equals(#a, #b)
    assert.same(a, b)
    return #a
  end

  it("copies, then fetches nothing when nothing changed, then only the changed chunks", function()
    src:sql([[CREATE TABLE shop.orders (id INT PRIMARY KEY, customer INT NOT NULL, amount DECIMAL(10,2), status VARCHAR(20),
        note TEXT NULL, f FLOAT NULL, created DATETIME(6));
      INSERT INTO shop.orders SELECT seq, seq % 97, seq / 7, ELT(1 + seq % 3, 'Shipped', 'Delivered', 'New'),
        IF(seq % 5 = 0, NULL, CONCAT('n', seq)), seq / 3, '2024-01-01' + INTERVAL seq MINUTE FROM seq_1_to_5000;]],
      "shop")
    local r = iterate("orders", "shop.orders:copy.orders", ", diffChunkRows = 100")
    assert.is_true(r["shop.orders"].full)
    assert.equals(5000, r["shop.orders"].rows)
    same("shop.orders", "copy.orders", "id")

    -- no change: the CHECKSUM TABLE gate answers, no chunk sums, no rows
    r = iterate("orders", "shop.orders:copy.orders", ", diffChunkRows = 100")
    local st = r["shop.orders"].stats
    assert.is_true(st.gated)
    assert.equals(0, st.rows_fetched)
    assert.equals(0, st.bytes_fetched)

    -- no change, gate off: every chunk summed on the source, still no row fetched
    r = iterate("orders", "shop.orders:copy.orders", ", diffChunkRows = 100, gate = false")
    st = r["shop.orders"].stats
    assert.is_false(st.gated)
    assert.equals(50, st.chunks)
    assert.equals(0, st.changed)
    assert.equals(0, st.rows_fetched)
    assert.is_true(st.summary_bytes < 50 * 64, "chunk summaries only")

    -- insert, update, delete in 3 chunks (incl. NULL <-> value, a FLOAT 7th digit)
    src:sql([[UPDATE shop.orders SET status = 'Returned', note = NULL WHERE id = 150;
      UPDATE shop.orders SET note = 'was null' WHERE id = 155;
      UPDATE shop.orders SET f = f + 0.0001 WHERE id = 160;
      DELETE FROM shop.orders WHERE id IN (2501, 2502);
      INSERT INTO shop.orders VALUES (6001, 1, 1.00, 'New', NULL, NULL, '2025-01-01 00:00:00.5');]], "shop")
    r = iterate("orders", "shop.orders:copy.orders", ", diffChunkRows = 100")
    st = r["shop.orders"].stats
    assert.equals(3, st.changed)
    assert.same({ 1, 3, 2 }, { st.inserts, st.updates, st.deletes })
    assert.is_true(st.rows_fetched <= 3 * 2 * 101, "fetched " .. st.rows_fetched .. " rows")
    assert.equals(4999, same("shop.orders", "copy.orders", "id"))
    local wm = sink:rows("SELECT phase FROM mocdc.watermark WHERE source_table = 'shop.orders'")
    assert.same({ { "diff" } }, wm)

    -- and again nothing
    r = iterate("orders", "shop.orders:copy.orders", ", diffChunkRows = 100")
    assert.equals(0, r["shop.orders"].stats.rows_fetched)
  end)

  it("bisects a big changed chunk, rebalances, and commits big iterations in pieces", function()
    src:sql([[CREATE TABLE shop.events (id BIGINT PRIMARY KEY, v VARCHAR(30));
      INSERT INTO shop.events SELECT seq * 10, CONCAT('v', seq) FROM seq_1_to_3000;]], "shop")
    local opts = ", diffChunkRows = 200, leafRows = 300"
    iterate("events", "shop.events:copy.events", opts, ", batchSize = 500")
    -- 4000 rows appended to the last chunk, 1 row changed in the middle of it
    src:sql([[INSERT INTO shop.events SELECT 30000 + seq, 'appended' FROM seq_1_to_4000;
      UPDATE shop.events SET v = 'x' WHERE id = 15000;]], "shop")
    local r = iterate("events", "shop.events:copy.events", opts, ", batchSize = 500")
    local st = r["shop.events"].stats
    assert.equals(2, st.changed)
    assert.equals(4000, st.inserts)
    assert.equals(1, st.updates)
    assert.is_true(st.bisections >= 1)
    assert.is_true(st.commits >= 8, "commits: " .. st.commits)
    -- the bisected append fetched the appended rows, not the chunk's 200 old ones twice over
    assert.is_true(st.rows_fetched <= 4000 + 2 * 400, "fetched " .. st.rows_fetched)
    same("shop.events", "copy.events", "id")
    -- the list was rebalanced: the next no-change pass (gate off) sums ~35 chunks of <= 400 rows
    r = iterate("events", "shop.events:copy.events", opts .. ", gate = false")
    st = r["shop.events"].stats
    assert.equals(0, st.changed)
    assert.is_true(st.chunks >= 30 and st.chunks <= 40, "chunks: " .. st.chunks)
    -- mass delete of a range spanning chunks
    src:sql("DELETE FROM shop.events WHERE id BETWEEN 5000 AND 20000", "shop")
    r = iterate("events", "shop.events:copy.events", opts)
    assert.equals(1501, r["shop.events"].stats.deletes)
    same("shop.events", "copy.events", "id")
  end)

  it("bisection fetches only the changed part of a big chunk", function()
    src:sql([[CREATE TABLE shop.big (id INT PRIMARY KEY, v VARCHAR(20));
      INSERT INTO shop.big SELECT seq, 'v' FROM seq_1_to_4000;]], "shop")
    local opts = ", diffChunkRows = 2000, leafRows = 200"
    iterate("big", "shop.big:copy.big", opts)
    src:sql("UPDATE shop.big SET v = 'w' WHERE id = 1234", "shop")
    local r = iterate("big", "shop.big:copy.big", opts)
    local st = r["shop.big"].stats
    assert.equals(1, st.changed)
    assert.equals(1, st.updates)
    assert.is_true(st.bisections >= 1)
    assert.is_true(st.rows_fetched <= 2 * 130, "fetched " .. st.rows_fetched .. " rows of a 2000-row chunk")
    same("shop.big", "copy.big", "id")
  end)

  it("diffs composite string keys, binary keys and tables without a key", function()
    src:sql([[CREATE TABLE shop.ck (region VARCHAR(10) NOT NULL, code VARBINARY(8) NOT NULL, qty INT, PRIMARY KEY (region, code));
      INSERT INTO shop.ck SELECT ELT(1 + seq % 4, 'east', 'West', 'north', 'Süd'), CAST(CONCAT('c', seq) AS BINARY), seq FROM seq_1_to_800;
      CREATE TABLE shop.nokey (a INT, b VARCHAR(5));
      INSERT INTO shop.nokey VALUES (1, 'x'), (1, 'x'), (2, NULL), (3, 'y');]], "shop")
    local tables = "shop.ck:copy.ck,shop.nokey:copy.nokey"
    iterate("multi", tables, ", diffChunkRows = 50")
    src:sql([[UPDATE shop.ck SET qty = -1 WHERE region = 'east' AND code = 'c4';
      DELETE FROM shop.ck WHERE region = 'West' AND code = 'c5';
      INSERT INTO shop.ck VALUES ('east', X'00ff', 7);
      DELETE FROM shop.nokey WHERE a = 1 LIMIT 1;
      INSERT INTO shop.nokey VALUES (3, 'y'), (NULL, NULL);]], "shop")
    local r = iterate("multi", tables, ", diffChunkRows = 50")
    local ck = r["shop.ck"].stats
    assert.same({ 1, 1, 1 }, { ck.inserts, ck.updates, ck.deletes })
    assert.is_true(ck.rows_fetched <= 6 * 51)
    same("shop.ck", "copy.ck", "region, code")
    local nk = r["shop.nokey"].stats
    assert.same({ 2, 0, 1 }, { nk.inserts, nk.updates, nk.deletes })
    same("shop.nokey", "copy.nokey", "a, b")
  end)

  it("reconciles against the sink when the stored list is gone (and repairs a drifted sink)", function()
    src:sql([[CREATE TABLE shop.rec (id INT PRIMARY KEY, v INT);
      INSERT INTO shop.rec SELECT seq, seq FROM seq_1_to_1000;]], "shop")
    iterate("rec", "shop.rec:copy.rec", ", diffChunkRows = 100")
    sink:sql("DELETE FROM mocdc.diff_state WHERE source_table LIKE 'shop.rec -> %'")
    local r = iterate("rec", "shop.rec:copy.rec", ", diffChunkRows = 100")
    local st = r["shop.rec"].stats
    assert.is_true(st.reconciled)
    assert.equals(0, st.changed)
    assert.equals(0, st.rows_fetched)
    -- someone edited the sink; the state is lost again: the reconcile repairs it
    sink:sql("UPDATE copy.rec SET v = 0 WHERE id = 777; DELETE FROM copy.rec WHERE id = 5; " ..
      "DELETE FROM mocdc.diff_state WHERE source_table LIKE 'shop.rec -> %'")
    r = iterate("rec", "shop.rec:copy.rec", ", diffChunkRows = 100")
    st = r["shop.rec"].stats
    assert.equals(2, st.changed)
    assert.same({ 1, 1, 0 }, { st.inserts, st.updates, st.deletes })
    same("shop.rec", "copy.rec", "id")
  end)

  it("runs transforms on the diffed rows", function()
    src:sql([[CREATE TABLE shop.people (id INT PRIMARY KEY, email VARCHAR(50), status VARCHAR(10));
      INSERT INTO shop.people VALUES (1, 'ann@x.org', 'ok'), (2, 'bob@y.org', 'Test'), (3, 'cy@z.org', 'ok');]], "shop")
    local script = dir .. "/people.lua"
    write(script, string.format([[
      local s = load.snapshot { uri = %q, tables = "shop.people:copy.people" }
        :filter(function(r) return r.status ~= "Test" end)
        :map(function(r) r.email = mask(r.email) return r end)
      save.append(s, %q, { duration = 1, checkpointLocation = %q })
    ]], src.uri, sink.uri, dir .. "/cp-people"))
    local function run()
      local ctx = pipeline.declare(script, {})
      return engine.run(ctx.jobs[1], ctx, { once = true })
    end
    run()
    assert.same({ { "1", "a**@x.org", "ok" }, { "3", "c*@z.org", "ok" } },
      sink:rows("SELECT * FROM copy.people ORDER BY id"))
    src:sql([[UPDATE shop.people SET status = 'Test' WHERE id = 1; UPDATE shop.people SET status = 'ok' WHERE id = 2;
      INSERT INTO shop.people VALUES (4, 'dee@w.org', 'ok');]], "shop")
    run()
    assert.same({ { "2", "b**@y.org", "ok" }, { "3", "c*@z.org", "ok" }, { "4", "d**@w.org", "ok" } },
      sink:rows("SELECT * FROM copy.people ORDER BY id"))
  end)

  it("reads only the changed keys of a system-versioned table (time travel, no checksums)", function()
    local schema_src = require("mocdc.schema")
    src:sql([[CREATE TABLE shop.hist (id INT PRIMARY KEY, v VARCHAR(20), n INT) WITH SYSTEM VERSIONING;
      INSERT INTO shop.hist SELECT seq, CONCAT('v', seq), seq FROM seq_1_to_3000;]], "shop")
    local c = require("mocdc.conn").open(src.uri)
    local listed = false
    for _, x in ipairs(schema_src.list_tables(c)) do if x.db == "shop" and x.table == "hist" then listed = true end end
    c:close()
    assert.is_true(listed, "mocdc.schema.list_tables lists the SYSTEM VERSIONED table shop.hist")
    local opts = ", diffChunkRows = 500, changeScanMargin = 0"
    iterate("hist", "shop.hist:copy.hist", opts)
    local r = iterate("hist", "shop.hist:copy.hist", opts)
    assert.is_true(r["shop.hist"].stats.versioned)
    assert.equals(0, r["shop.hist"].stats.rows_fetched)
    -- a transaction open across the next snapshot must not be missed
    src:sql([[UPDATE shop.hist SET v = 'u' WHERE id IN (10, 2000); DELETE FROM shop.hist WHERE id = 2999;
      INSERT INTO shop.hist VALUES (5000, 'new', NULL);]], "shop")
    r = iterate("hist", "shop.hist:copy.hist", opts)
    local st = r["shop.hist"].stats
    assert.is_true(st.versioned)
    assert.equals(4, st.changed)
    assert.same({ 1, 2, 1 }, { st.inserts, st.updates, st.deletes })
    assert.equals(4 + 3 + 3, st.rows_fetched) -- 4 changed keys, 3 source rows, 3 sink rows
    same("shop.hist", "copy.hist", "id")
    r = iterate("hist", "shop.hist:copy.hist", opts)
    assert.equals(0, r["shop.hist"].stats.changed)
    -- a transaction that started before a snapshot and commits after it is not missed
    local w = require("mocdc.conn").open(src.uri)
    assert(w:exec("START TRANSACTION"))
    assert(w:exec("UPDATE shop.hist SET n = -1 WHERE id = 77"))
    require("mocdc.util.lib").sleep(1.1)
    r = iterate("hist", "shop.hist:copy.hist", opts) -- does not see the open transaction
    assert.equals(0, r["shop.hist"].stats.changed)
    assert(w:exec("COMMIT"))
    w:close()
    r = iterate("hist", "shop.hist:copy.hist", opts)
    assert.equals(1, r["shop.hist"].stats.updates)
    same("shop.hist", "copy.hist", "id")
  end)

  it("refuses key columns whose collation differs between source and sink", function()
    src:sql([[CREATE TABLE shop.coll (k VARCHAR(10) COLLATE utf8mb4_bin PRIMARY KEY, v INT);
      INSERT INTO shop.coll VALUES ('a', 1), ('B', 2);]], "shop")
    sink:sql([[CREATE DATABASE IF NOT EXISTS copy;
      CREATE TABLE copy.coll (k VARCHAR(10) COLLATE utf8mb4_general_ci PRIMARY KEY, v INT);]])
    local ok, err = pcall(iterate, "coll", "shop.coll:copy.coll")
    assert.is_false(ok)
    assert.equals("key column 'k' has collation utf8mb4_bin in shop.coll but utf8mb4_general_ci in sink table " ..
      "copy.coll; snapshot diffing compares key ranges on both servers: give the sink column the same collation",
      require("mocdc.errors").message(err))
  end)

  it("sums chunks on two source connections in one snapshot: a write cannot commit between them", function()
    src:sql([[CREATE TABLE shop.par (id INT PRIMARY KEY, v INT NOT NULL, s VARCHAR(20) NULL);
      INSERT INTO shop.par SELECT seq, seq, CONCAT('s', seq) FROM seq_1_to_3000;]], "shop")
    local r = iterate("par", "shop.par:copy.par", ", diffChunkRows = 100")
    assert.is_true(r["shop.par"].full)
    src:sql("UPDATE shop.par SET v = -v WHERE id IN (5, 1500, 2999)", "shop")
    r = iterate("par", "shop.par:copy.par", ", diffChunkRows = 100")
    local st = r["shop.par"].stats
    assert.equals(2, st.conns)
    assert.equals(3, st.changed)
    assert.equals(3, st.updates)
    same("shop.par", "copy.par", "id")

    -- the seam between the main connection's snapshot and the helper's: a
    -- writer there must wait for the LOCK TABLES ... READ (and gives up after 1 s)
    local snapshot = require("mocdc.source.mysql")
    local s2 = snapshot.open({ uri = src.uri, tables = "shop.par" })
    local tried
    s2.between_snapshots = function()
      local w = assert(require("mocdc.conn").open(src.uri))
      assert(w:exec("SET SESSION lock_wait_timeout = 1"))
      local ok, err = w:exec("INSERT INTO shop.par VALUES (9001, 1, 'x')")
      tried = { ok = ok, err = err }
      w:close()
    end
    local helpers = select(1, s2:start_helpers(1, { { src_db = "shop", src_table = "par" } }))
    assert.equals(1, #helpers)
    assert.is_nil(tried.ok)
    assert.matches("Lock wait timeout", tried.err)
    -- a write after the snapshots is seen by neither connection
    src:sql("INSERT INTO shop.par VALUES (9002, 2, 'y')", "shop")
    assert.same(s2.c:query("SELECT COUNT(*), SUM(v) FROM shop.par"), helpers[1]:query("SELECT COUNT(*), SUM(v) FROM shop.par"))
    assert.equals("3000", s2.c:query("SELECT COUNT(*) FROM shop.par")[1][1])
    s2:end_snapshot()
    s2.between_snapshots = nil

    -- a write transaction open on the table: the lock is not waited for (the
    -- source's writers never queue behind it); one connection this time
    local w = assert(require("mocdc.conn").open(src.uri))
    assert(w:exec("START TRANSACTION"))
    assert(w:exec("UPDATE shop.par SET v = v WHERE id = 1"))
    local t0 = require("mocdc.util.lib").mono()
    local h2, started = s2:start_helpers(1, { { src_db = "shop", src_table = "par" } })
    assert.equals(0, #h2)
    assert.is_false(started)
    assert.is_true(require("mocdc.util.lib").mono() - t0 < 0.5)
    assert.matches("a write transaction is open on one of the tables", s2.helper_note)
    assert(w:exec("ROLLBACK"))
    w:close()
    s2:close()
    src:sql("DELETE FROM shop.par WHERE id = 9002", "shop")
  end)

  it("falls back to one connection when the source user cannot LOCK TABLES, and says so once", function()
    src:sql([[CREATE TABLE shop.nolock (id INT PRIMARY KEY, v INT NOT NULL);
      INSERT INTO shop.nolock SELECT seq, seq FROM seq_1_to_500;
      CREATE USER IF NOT EXISTS 'reader'@'127.0.0.1' IDENTIFIED BY 'readerpw';
      GRANT SELECT ON shop.* TO 'reader'@'127.0.0.1';]], "shop")
    local uri = src.uri:gsub("root:[^@]*@", "reader:readerpw@")
    local script = dir .. "/nolock.lua"
    write(script, string.format([[
      local s = load.snapshot { uri = %q, tables = "shop.nolock:copy.nolock", diffChunkRows = 100 }
      save.append(s, %q, { duration = 1, checkpointLocation = %q })
    ]], uri, sink.uri, dir .. "/cp-nolock"))
    local lines, stats = three_iterations(script, function()
      src:sql("UPDATE shop.nolock SET v = 0 WHERE id = 250", "shop")
    end, "info")
    local conns = { stats[2].conns, stats[3].conns }
    local notes = 0
    for _, l in ipairs(lines) do
      if l:find("chunk checksums on one connection this iteration", 1, true) then
        notes = notes + 1
        assert.matches("LOCK TABLES", l)
        assert.not_matches("readerpw", l)
      end
    end
    assert.equals(1, notes, table.concat(lines)) -- once per run, not once per iteration
    assert.same({ 1, 1 }, conns)
    same("shop.nolock", "copy.nolock", "id")
  end)

  it("skips the CHECKSUM TABLE gate after an iteration that found changes (gate = auto)", function()
    src:sql([[CREATE TABLE shop.busy (id INT PRIMARY KEY, v INT NOT NULL);
      INSERT INTO shop.busy SELECT seq, seq FROM seq_1_to_1000;]], "shop")
    local function step() return iterate("busy", "shop.busy:copy.busy", ", diffChunkRows = 100")["shop.busy"].stats end
    step() -- full copy; its baseline stores the gate
    assert.is_true(step().gated)
    src:sql("UPDATE shop.busy SET v = 0 WHERE id = 10", "shop")
    local st = step() -- the gate differs: chunk sums
    assert.is_false(st.gated)
    assert.equals(1, st.changed)
    src:sql("UPDATE shop.busy SET v = 0 WHERE id = 20", "shop")
    st = step() -- busy last time: no gate, straight to the chunk sums
    assert.is_false(st.gate_ran)
    assert.equals(1, st.changed)
    st = step() -- quiet now, but no gate stored: chunk sums find nothing
    assert.is_false(st.gated)
    assert.equals(0, st.changed)
    st = step()
    assert.is_false(st.gated) -- the gate was computed, not yet stored
    assert.is_true(st.gate_ran)
    assert.is_true(step().gated)
    same("shop.busy", "copy.busy", "id")
    -- gate = true: always; a bad value is refused
    src:sql("UPDATE shop.busy SET v = 1 WHERE id = 30", "shop")
    step()
    st = iterate("busy", "shop.busy:copy.busy", ", diffChunkRows = 100, gate = true")["shop.busy"].stats
    assert.is_true(st.gate_ran)
    local ok, err = pcall(iterate, "busy", "shop.busy:copy.busy", ", gate = 'sometimes'")
    assert.is_false(ok)
    assert.equals("option gate = 'sometimes' must be auto, true or false", require("mocdc.errors").message(err))
  end)

  it("diffs a table by its updateColumn: changed rows by an index range, deletes by row counts", function()
    src:sql([[CREATE TABLE shop.upd (id INT PRIMARY KEY, v INT NOT NULL, s VARCHAR(20) NULL,
        updated TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), KEY (updated));
      INSERT INTO shop.upd (id, v, s) SELECT seq, seq, CONCAT('s', seq) FROM seq_1_to_3000;]], "shop")
    local opts = ", diffChunkRows = 100, updateColumn = 'updated', changeScanMargin = 0"
    local function step() return iterate("upd", "shop.upd:copy.upd", opts)["shop.upd"] end
    assert.is_true(step().full)
    local st = step().stats
    assert.is_true(st.updated)
    assert.equals(0, st.keys)
    assert.equals(0, st.rows_fetched)
    assert.equals(0, st.sum_queries, "no chunk sums")
    -- updates, inserts: found by the column; deletes: by the counts, in their chunk only
    src:sql([[UPDATE shop.upd SET v = -v WHERE id BETWEEN 101 AND 110;
      INSERT INTO shop.upd (id, v, s) VALUES (5000, 1, NULL), (5001, 2, 'x');
      DELETE FROM shop.upd WHERE id IN (2001, 2002);]], "shop")
    st = step().stats
    assert.same({ 2, 10, 2 }, { st.inserts, st.updates, st.deletes })
    assert.equals(12, st.keys)
    assert.equals(1, st.changed, "one chunk with deletes")
    assert.is_true(st.rows_fetched <= 12 * 3 + 2 * 101, "fetched " .. st.rows_fetched .. " rows")
    same("shop.upd", "copy.upd", "id")
    -- a delete and an insert in the same chunk, or equal totals across chunks, are still found
    src:sql("DELETE FROM shop.upd WHERE id = 1500; INSERT INTO shop.upd (id, v) VALUES (1500, 7)", "shop")
    st = step().stats
    assert.equals(1, st.updates)
    src:sql("DELETE FROM shop.upd WHERE id = 1600; INSERT INTO shop.upd (id, v) VALUES (3500, 7)", "shop")
    st = step().stats
    assert.same({ 1, 0, 1 }, { st.inserts, st.updates, st.deletes })
    same("shop.upd", "copy.upd", "id")
  end)

  it("updateColumn: a transaction open across a snapshot is not missed; a hand-set time is caught by the full check", function()
    src:sql([[CREATE TABLE shop.upd2 (id INT PRIMARY KEY, v INT NOT NULL,
        updated TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP, KEY (updated));
      INSERT INTO shop.upd2 (id, v) SELECT seq, seq FROM seq_1_to_500;]], "shop")
    local opts = ", diffChunkRows = 100, updateColumn = 'updated', fullCheckInterval = 3"
    local function step() return iterate("upd2", "shop.upd2:copy.upd2", opts)["shop.upd2"] end
    assert.is_true(step().full)
    local w = require("mocdc.conn").open(src.uri)
    assert(w:exec("START TRANSACTION"))
    assert(w:exec("UPDATE shop.upd2 SET v = -1 WHERE id = 77"))
    require("mocdc.util.lib").sleep(1.5)
    local st = step().stats -- does not see the open transaction
    assert.is_true(st.updated)
    assert.equals(0, st.updates)
    assert(w:exec("COMMIT"))
    w:close()
    st = step().stats
    assert.equals(1, st.updates)
    same("shop.upd2", "copy.upd2", "id")
    -- a writer that sets the column to an old time escapes the index range...
    src:sql("UPDATE shop.upd2 SET v = -2, updated = '2001-01-01 00:00:00' WHERE id = 88", "shop")
    st = step().stats
    assert.is_true(st.updated)
    assert.equals(0, st.updates)
    -- ...until the next full check (every fullCheckInterval seconds) compares chunk sums
    require("mocdc.util.lib").sleep(3.1)
    st = step().stats
    assert.is_true(st.full_check)
    assert.equals(1, st.updates)
    same("shop.upd2", "copy.upd2", "id")
    assert.is_true(step().stats.updated) -- and back to the column
  end)

  it("updateColumn: refuses a column the server does not maintain; tables without it use chunk sums", function()
    src:sql([[CREATE TABLE shop.upd3 (id INT PRIMARY KEY, updated DATETIME NULL);
      INSERT INTO shop.upd3 VALUES (1, NULL);
      CREATE TABLE shop.upd4 (id INT PRIMARY KEY, v INT);
      INSERT INTO shop.upd4 VALUES (1, 1), (2, 2);]], "shop")
    local ok, err = pcall(iterate, "upd3", "shop.upd3:copy.upd3", ", updateColumn = 'updated'")
    assert.is_false(ok)
    assert.equals("updateColumn updated of shop.upd3 is datetime NULL DEFAULT NULL; it must be a TIMESTAMP NOT NULL " ..
      "DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP column (the server then sets it on every insert and " ..
      "update; a DATETIME depends on the writer's time zone): fix the column or drop the updateColumn option",
      require("mocdc.errors").message(err))
    -- the usual "NULL DEFAULT NULL ON UPDATE CURRENT_TIMESTAMP" misses inserts: refused too
    src:sql([[CREATE TABLE shop.upd6 (id INT PRIMARY KEY,
      updated TIMESTAMP NULL DEFAULT NULL ON UPDATE CURRENT_TIMESTAMP)]], "shop")
    ok, err = pcall(iterate, "upd6", "shop.upd6:copy.upd6", ", updateColumn = 'updated'")
    assert.is_false(ok)
    assert.matches("updateColumn updated of shop.upd6 is timestamp NULL DEFAULT NULL on update current_timestamp%(%); " ..
      "it must be", require("mocdc.errors").message(err))
    iterate("upd4", "shop.upd4:copy.upd4", ", updateColumn = 'updated'")
    src:sql("UPDATE shop.upd4 SET v = 5 WHERE id = 2", "shop")
    local st = iterate("upd4", "shop.upd4:copy.upd4", ", updateColumn = 'updated'")["shop.upd4"].stats
    assert.is_nil(st.updated)
    assert.equals(1, st.updates)
    same("shop.upd4", "copy.upd4", "id")

    -- without the PROCESS privilege: said once, chunk checksums, still exact
    src:sql([[CREATE TABLE shop.upd5 (id INT PRIMARY KEY, v INT NOT NULL,
        updated TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP);
      INSERT INTO shop.upd5 (id, v) SELECT seq, seq FROM seq_1_to_300;
      CREATE USER IF NOT EXISTS 'reader2'@'127.0.0.1' IDENTIFIED BY 'readerpw';
      GRANT SELECT, LOCK TABLES ON shop.* TO 'reader2'@'127.0.0.1';]], "shop")
    local script = dir .. "/upd5.lua"
    write(script, string.format([[
      local s = load.snapshot { uri = %q, tables = "shop.upd5:copy.upd5", diffChunkRows = 100, updateColumn = "updated" }
      save.append(s, %q, { duration = 1, checkpointLocation = %q })
    ]], (src.uri:gsub("root:[^@]*@", "reader2:readerpw@")), sink.uri, dir .. "/cp-upd5"))
    local lines, stats = three_iterations(script, function()
      src:sql("UPDATE shop.upd5 SET v = 0 WHERE id = 250", "shop")
    end)
    assert.is_nil(stats[2].updated)
    assert.equals(1, stats[2].updates)
    local warned = 0
    for _, l in ipairs(lines) do
      if l:find("diffed by chunk checksums, not by its updateColumn updated: reading the oldest open transaction " ..
          "failed", 1, true) and l:find("PROCESS privilege", 1, true) then
        warned = warned + 1
      end
    end
    assert.equals(1, warned, table.concat(lines))
    same("shop.upd5", "copy.upd5", "id")
  end)

  it("updateColumn and history are not trusted on a replica (late rows carry the primary's times)", function()
    local primary = mdb.start({ name = "diff-primary", binlog = true })
    local replica = mdb.start({ name = "diff-replica" })
    primary:sql("CREATE DATABASE rp")
    primary:sql([[CREATE TABLE rp.t (id INT PRIMARY KEY, v INT NOT NULL,
        updated TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP);
      INSERT INTO rp.t (id, v) SELECT seq, seq FROM seq_1_to_200;]], "rp")
    replica:sql(string.format([[CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = %d, MASTER_USER = 'root',
        MASTER_PASSWORD = '%s', MASTER_USE_GTID = no, MASTER_LOG_FILE = '', MASTER_LOG_POS = 4; START SLAVE;]],
      primary.port, primary.password))
    cli.eventually(function()
      local r = replica:rows("SELECT COUNT(*) FROM rp.t")
      return r[1] and r[1][1] == "200"
    end, 20, "the replica catching up")
    local c = assert(require("mocdc.conn").open(replica.uri))
    local lo, why = engine.version_lo(c)
    c:close()
    assert.is_nil(lo)
    assert.matches("the source is a replica", why)
    local c2 = assert(require("mocdc.conn").open(primary.uri))
    assert.is_string((engine.version_lo(c2)))
    c2:close()
    replica:sql("STOP SLAVE")
    replica:stop()
    primary:stop()
  end)

  it("updateColumn: after key-driven iterations, a fall back to chunk sums compares with the sink, not stale sums", function()
    upd_table("upd7")
    local opts = ", diffChunkRows = 100, updateColumn = 'updated', changeScanMargin = 0"
    assert.is_true(iterate("upd7", "shop.upd7:copy.upd7", opts)["shop.upd7"].full)
    src:sql("INSERT INTO shop.upd7 (id, v) VALUES (1000, 1)", "shop")
    assert.equals(1, iterate("upd7", "shop.upd7:copy.upd7", opts)["shop.upd7"].stats.inserts)
    src:sql([[DELETE FROM shop.upd7 WHERE id = 1000;
      CREATE USER IF NOT EXISTS 'reader3'@'127.0.0.1' IDENTIFIED BY 'readerpw';
      GRANT SELECT ON shop.* TO 'reader3'@'127.0.0.1';]], "shop")
    -- the same pipeline, now without the PROCESS privilege: chunk sums, and
    -- (the stored ones being stale) compared with the sink's
    local sub = dir .. "/noproc"
    os.execute("mkdir -p " .. sub)
    write(sub .. "/upd7.lua", string.format([[
      local s = load.snapshot { uri = %q, tables = "shop.upd7:copy.upd7", diffChunkRows = 100, updateColumn = "updated" }
      save.append(s, %q, { duration = 1, checkpointLocation = %q })
    ]], (src.uri:gsub("root:[^@]*@", "reader3:readerpw@")), sink.uri, dir .. "/cp-upd7"))
    local ctx = pipeline.declare(sub .. "/upd7.lua", {})
    log.level = "error" -- the one warning is asserted in the PROCESS test above
    local ok, res = pcall(engine.run, ctx.jobs[1], ctx, { once = true })
    log.level = "warn"
    assert(ok, res)
    local st = res[1].stats
    assert.is_nil(st.updated)
    assert.equals(1, st.deletes)
    same("shop.upd7", "copy.upd7", "id")
  end)

  it("bounds the change scan by the oldest writing transaction whatever the server's time zone", function()
    for _, tz in ipairs({ "Asia/Tokyo", "America/New_York" }) do
      local s = mdb.start({ name = "diff-tz", tz = tz })
      s:sql("CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY)")
      local c = assert(require("mocdc.conn").open(s.uri))
      local w = assert(require("mocdc.conn").open(s.uri))
      local now0 = c:query("SELECT UTC_TIMESTAMP(6)")[1][1]
      assert(w:exec("START TRANSACTION"))
      assert(w:exec("INSERT INTO d.t VALUES (1)"))
      require("mocdc.util.lib").sleep(1.2)
      local lo = assert(engine.version_lo(c, 0))
      -- the bound is the transaction's start (whole seconds, an hour earlier under DST), before "now"
      assert.is_true(lo <= now0, tz .. ": " .. lo .. " > " .. now0)
      local hours = tz == "America/New_York" and 2 or 1
      assert.is_true(lo > c:query("SELECT UTC_TIMESTAMP(6) - INTERVAL " .. hours .. " HOUR")[1][1], tz .. ": " .. lo)
      assert(w:exec("ROLLBACK"))
      -- a transaction that has not written does not hold the bound back
      assert(w:exec("START TRANSACTION"))
      assert(w:query("SELECT * FROM d.t"))
      require("mocdc.util.lib").sleep(1.2)
      local now1 = c:query("SELECT UTC_TIMESTAMP(6) - INTERVAL 1 SECOND")[1][1]
      assert.is_true(assert(engine.version_lo(c, 0)) > now1)
      w:close()
      c:close()
      s:stop()
    end
  end)

  it("does not trust information_schema.innodb_trx while a frequent reader keeps its cache stale", function()
    src:sql("CREATE TABLE shop.stale (id INT PRIMARY KEY, v INT NOT NULL)", "shop")
    -- a transaction that has written, open across both checks below
    local w = assert(require("mocdc.conn").open(src.uri))
    assert(w:exec("START TRANSACTION"))
    assert(w:exec("INSERT INTO shop.stale VALUES (1, 1)"))
    local c = assert(require("mocdc.conn").open(src.uri))
    local started = c:query("SELECT UTC_TIMESTAMP(6)")[1][1] -- after the transaction's start
    -- a monitoring client reading innodb_trx every 10 ms, inside the server (InnoDB refreshes
    -- that cache only when it was not read for 100 ms): bounded to 60 s, killed below
    os.execute(string.format("MYSQL_PWD=%s mariadb --no-defaults -h127.0.0.1 -P%d -uroot --delimiter=// -e " ..
      "'BEGIN NOT ATOMIC DECLARE i INT DEFAULT 0; WHILE i < 6000 DO SELECT COUNT(*) INTO @stale_reader " ..
      "FROM information_schema.innodb_trx; SELECT SLEEP(0.01) INTO @stale_reader_sleep; SET i = i + 1; END WHILE; END' >/dev/null 2>&1 </dev/null &",
      src.password, src.port))
    local reader = cli.eventually(function()
      local r = c:query("SELECT id FROM information_schema.processlist WHERE info LIKE '%@stale_reader%' " ..
        "AND id <> CONNECTION_ID()")
      return r[1] and r[1][1]
    end, 10, "the innodb_trx reader to run")
    local ok, lo, why = pcall(engine.version_lo, c, 0)
    c:exec("KILL " .. reader)
    assert(ok, lo)
    -- stale: no bound at all (a bound from the stale cache could miss the open transaction)
    assert.is_nil(lo)
    assert.equals("information_schema.innodb_trx was not refreshed (it is read too often)", why)
    -- the reader gone, the cache is fresh again: the bound is at most the open transaction's start
    cli.eventually(function() return c:query("SELECT COUNT(*) FROM information_schema.processlist " ..
      "WHERE info LIKE '%@stale_reader%' AND id <> CONNECTION_ID()")[1][1] == "0" end, 10, "the reader to end")
    lo, why = engine.version_lo(c, 0)
    assert(w:exec("ROLLBACK"))
    w:close()
    c:close()
    assert.is_string(lo, why)
    assert.is_true(lo <= started, "bound " .. tostring(lo) .. " after the open transaction's start " .. started)
  end)

  it("system-versioned tables get the periodic full check too (a change the history missed is repaired)", function()
    src:sql([[CREATE TABLE shop.hist2 (id INT PRIMARY KEY, v INT NOT NULL) WITH SYSTEM VERSIONING;
      INSERT INTO shop.hist2 SELECT seq, seq FROM seq_1_to_300;]], "shop")
    local opts = ", diffChunkRows = 100, fullCheckInterval = 2, changeScanMargin = 0"
    local function step() return iterate("hist2", "shop.hist2:copy.hist2", opts)["shop.hist2"].stats end
    iterate("hist2", "shop.hist2:copy.hist2", opts)
    assert.is_true(step().versioned)
    -- a sink drifted behind the history's back: the key scan cannot see it...
    sink:sql("UPDATE copy.hist2 SET v = -1 WHERE id = 42")
    assert.equals(0, step().updates)
    -- ...the full check does
    require("mocdc.util.lib").sleep(2.1)
    local st = step()
    assert.is_true(st.full_check)
    assert.equals(1, st.updates)
    same("shop.hist2", "copy.hist2", "id")
    assert.is_true(step().versioned)
  end)

  it("updateColumn: more changed rows than updateColumnMaxKeys compares chunk sums for that iteration", function()
    upd_table("upd8")
    local opts = ", diffChunkRows = 100, updateColumn = 'updated', changeScanMargin = 0, updateColumnMaxKeys = 5"
    local function step() return iterate("upd8", "shop.upd8:copy.upd8", opts)["shop.upd8"].stats end
    iterate("upd8", "shop.upd8:copy.upd8", opts)
    src:sql("UPDATE shop.upd8 SET v = -v WHERE id <= 3", "shop")
    local st = step()
    assert.is_true(st.updated)
    assert.equals(3, st.updates)
    src:sql("UPDATE shop.upd8 SET v = -v WHERE id BETWEEN 101 AND 110", "shop")
    st = step()
    assert.is_nil(st.updated)
    assert.is_true(st.full_check)
    assert.equals(10, st.updates)
    same("shop.upd8", "copy.upd8", "id")
    assert.is_true(step().updated)
  end)
end)
