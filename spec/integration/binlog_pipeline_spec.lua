-- Issue 3: the binlog source end to end (real MariaDB servers, the mocdc binary).
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local all_types = require("spec.support.all_types")
local cjson = require("cjson")
local util = require("mocdc.util.lib")

local ORDERS_DDL = [[
CREATE TABLE source_db.orders (
    order_id INT PRIMARY KEY,
    customer_id INT,
    order_date DATETIME,
    amount DECIMAL(10, 2),
    status VARCHAR(20)
)]]

mdb.describe("binlog pipeline (issue 3)", function()
  local src, sink, home
  setup(function()
    src = mdb.start({ name = "bl-source", binlog = true })
    sink = mdb.start({ name = "bl-sink" })
    home = cli.tmpdir()
  end)
  teardown(function() os.execute("rm -rf " .. home) end)

  local function fresh(name)
    src:sql("DROP DATABASE IF EXISTS source_db; CREATE DATABASE source_db; " .. ORDERS_DDL .. ";" ..
      [[INSERT INTO source_db.orders (order_id, customer_id, order_date, amount, status) VALUES
       (1, 101, '2024-01-15 14:30:00', 99.99, 'Shipped'),
       (2, 102, '2024-02-10 10:00:00', 149.50, 'Delivered'),
       (3, 103, '2024-03-05 16:45:00', 75.00, 'Processing'),
       (4, 104, '2024-04-20 09:15:00', 200.00, 'Shipped'),
       (5, 105, '2024-05-12 14:00:00', 49.99, 'Delivered');]])
    sink:sql("DROP DATABASE IF EXISTS analytics_db; DROP DATABASE IF EXISTS mocdc")
    return home .. "/" .. name
  end

  local function run(cp, extra)
    local args = { "run", "pipelines/binlog_to_mysql.lua", "--set", "source_uri=" .. src.uri,
      "--set", "sink_uri=" .. sink.uri, "--set", "checkpoint=" .. cp, "--once" }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    return cli.run(args, { env = { MOCDC_HOME = home } })
  end

  local function same_table(sdb, ddb, t, cols)
    cols = cols or "*"
    local a = src:rows("SELECT " .. cols .. " FROM " .. sdb .. "." .. t .. " ORDER BY 1")
    local b = sink:rows("SELECT " .. cols .. " FROM " .. ddb .. "." .. t .. " ORDER BY 1")
    assert.same(a, b)
    return a
  end

  it("runs seed 000's scenario: full copy, then insert/delete/update from the binlog, resuming", function()
    local cp = fresh("seed000")
    local rc, out, err = run(cp)
    assert.equals(0, rc, err)
    assert.equals("5", sink:rows("SELECT COUNT(*) FROM analytics_db.orders_backup")[1][1])
    src:sql([[INSERT INTO source_db.orders (order_id, customer_id, order_date, amount, status) VALUES
      (6, 106, '2024-10-29 12:00:00', 150.00, 'New');
      DELETE FROM source_db.orders WHERE order_id = 6;
      UPDATE source_db.orders SET status = 'Delivered' WHERE order_id = 4;]])
    rc, out, err = run(cp)
    assert.equals(0, rc, err)
    assert.same({
      { "1", "101", "2024-01-15 14:30:00", "99.99", "Shipped" },
      { "2", "102", "2024-02-10 10:00:00", "149.50", "Delivered" },
      { "3", "103", "2024-03-05 16:45:00", "75.00", "Processing" },
      { "4", "104", "2024-04-20 09:15:00", "200.00", "Delivered" },
      { "5", "105", "2024-05-12 14:00:00", "49.99", "Delivered" },
    }, (sink:rows("SELECT * FROM analytics_db.orders_backup ORDER BY order_id")))
    -- the watermark is in the sink, in the same transaction as the data
    local wm = sink:rows("SELECT phase, position FROM mocdc.watermark WHERE source_table = 'source_db.orders'")
    assert.equals("cdc", wm[1][1])
    assert.matches('"file":"mysql%-bin%.%d+"', wm[1][2])
  end)

  it("carries every type through insert, update (to and from NULL) and delete", function()
    local cp = fresh("types")
    src:sql([[DROP DATABASE IF EXISTS types_db; CREATE DATABASE types_db;
      ]] .. all_types.ddl("types_db.all_types") .. [[;
      INSERT INTO types_db.all_types (id) VALUES (100);]])
    sink:sql("DROP DATABASE IF EXISTS types_db")
    local args = { "--set", "tables=types_db.all_types" }
    local rc, _, err = run(cp, args)
    assert.equals(0, rc, err)
    src:sql(all_types.insert("types_db.all_types") .. [[;
      UPDATE types_db.all_types SET ti = NULL, vc = NULL, j = NULL, b64 = NULL WHERE id = 2;
      UPDATE types_db.all_types SET ti = 5, vc = 'now set', j = '{"a":1}', b64 = b'101', ts = '2001-02-03 04:05:06.7' WHERE id = 3;
      DELETE FROM types_db.all_types WHERE id = 100;]])
    rc, _, err = run(cp, args)
    assert.equals(0, rc, err)
    local cols = all_types.COMPARE
    local rows = same_table("types_db", "types_db", "all_types", cols)
    assert.equals(3, #rows)
    src:sql("DELETE FROM types_db.all_types WHERE id = 1")
    rc, _, err = run(cp, args)
    assert.equals(0, rc, err)
    assert.equals(2, #same_table("types_db", "types_db", "all_types", cols))
  end)

  it("stops on DDL without mergeSchema with one line naming the DDL and the option, applies it with mergeSchema", function()
    local cp = fresh("ddl")
    local rc, _, err = run(cp)
    assert.equals(0, rc, err)
    src:sql("ALTER TABLE source_db.orders ADD COLUMN note VARCHAR(30); INSERT INTO source_db.orders VALUES (7, 107, NULL, 1.00, 'New', 'hello')")
    rc, _, err = run(cp)
    assert.equals(1, rc, err)
    assert.is_true(cli.one_line(err), err)
    assert.matches("source DDL on source_db.orders at mysql%-bin%.%d+:%d+ %(\"ALTER TABLE source_db.orders ADD COLUMN note VARCHAR%(30%)\"%).*mergeSchema", err)
    assert.equals("5", sink:rows("SELECT COUNT(*) FROM analytics_db.orders_backup")[1][1])
    rc, _, err = run(cp, { "--set", "merge_schema=true" })
    assert.equals(0, rc, err)
    assert.same({ { "7", "New", "hello" } }, (sink:rows("SELECT order_id, status, note FROM analytics_db.orders_backup WHERE order_id = 7")))
  end)

  it("handles a table without a primary key without duplicating rows", function()
    local cp = fresh("nopk")
    src:sql([[DROP DATABASE IF EXISTS nopk; CREATE DATABASE nopk; CREATE TABLE nopk.events (a INT, b VARCHAR(10));
      INSERT INTO nopk.events VALUES (1, 'x'), (1, 'x'), (2, 'y');]])
    sink:sql("DROP DATABASE IF EXISTS nopk")
    local args = { "--set", "tables=nopk.events" }
    local rc, _, err = run(cp, args)
    assert.equals(0, rc, err)
    src:sql("DELETE FROM nopk.events WHERE a = 1 LIMIT 1; UPDATE nopk.events SET b = 'z' WHERE a = 2; INSERT INTO nopk.events VALUES (3, NULL), (3, NULL)")
    rc, _, err = run(cp, args)
    assert.equals(0, rc, err)
    local q = "SELECT a, b, COUNT(*) FROM nopk.events GROUP BY a, b ORDER BY a"
    assert.same(src:rows(q), sink:rows(q))
    assert.equals(4, tonumber(sink:rows("SELECT COUNT(*) FROM nopk.events")[1][1]))
  end)

  it("uses idCols as the key of a table without a primary key (upserts replace, never duplicate)", function()
    local cp = fresh("idcols")
    src:sql([[DROP DATABASE IF EXISTS nokey; CREATE DATABASE nokey; CREATE TABLE nokey.t (id INT NOT NULL, v VARCHAR(10));
      INSERT INTO nokey.t VALUES (1, 'a'), (2, 'b');]])
    sink:sql("DROP DATABASE IF EXISTS nokey")
    local args = { "--set", "tables=nokey.t", "--set", "idCols=id" }
    local rc, _, err = run(cp, args)
    assert.equals(0, rc, err)
    src:sql("UPDATE nokey.t SET v = 'A' WHERE id = 1; DELETE FROM nokey.t WHERE id = 2; INSERT INTO nokey.t VALUES (3, 'c')")
    rc, _, err = run(cp, args)
    assert.equals(0, rc, err)
    assert.same({ { "1", "A" }, { "3", "c" } }, (sink:rows("SELECT * FROM nokey.t ORDER BY id")))
    -- an existing sink table without that key is refused with what to do
    local cp2 = fresh("idcols2")
    sink:sql("DROP DATABASE IF EXISTS nokey; CREATE DATABASE nokey; CREATE TABLE nokey.t (id INT NOT NULL, v VARCHAR(10))")
    rc, _, err = run(cp2, args)
    assert.equals(2, rc, err) -- idCols that the sink table cannot serve: a configuration error
    assert.is_true(cli.one_line(err), err)
    assert.matches("has no primary or unique NOT NULL key on idCols %(id%): add one", err)
  end)

  it("writes seed 004's JSONL change records with the file sink", function()
    fresh("files")
    src:sql([[DROP DATABASE IF EXISTS mlsql_console; CREATE DATABASE mlsql_console;
      CREATE TABLE mlsql_console.script_file (id INT PRIMARY KEY, name VARCHAR(50), content TEXT);
      INSERT INTO mlsql_console.script_file VALUES (1, 'a.mlsql', 'select 1');]])
    local path = home .. "/binlog1"
    local args = { "run", "pipelines/binlog_to_files.lua", "--set", "host=127.0.0.1", "--set", "port=" .. src.port,
      "--set", "userName=root", "--set", "password=" .. mdb.PASSWORD, "--set", "path=" .. path .. "/{db}/{table}",
      "--set", "checkpointLocation=" .. home .. "/cpl-binlog", "--set", "duration=1", "--once" }
    local rc, _, err = cli.run(args, { env = { MOCDC_HOME = home } })
    assert.equals(0, rc, err)
    src:sql([[INSERT INTO mlsql_console.script_file VALUES (2, 'b.mlsql', 'select 2');
      UPDATE mlsql_console.script_file SET content = 'select 11' WHERE id = 1;
      DELETE FROM mlsql_console.script_file WHERE id = 2;]])
    rc, _, err = cli.run(args, { env = { MOCDC_HOME = home } })
    assert.equals(0, rc, err)
    local f = assert(io.open(path .. "/mlsql_console/script_file/changes.jsonl"))
    local recs = {}
    for line in f:lines() do recs[#recs + 1] = cjson.decode(line) end
    f:close()
    assert.equals(4, #recs)
    assert.equals("insert", recs[1].op)
    assert.is_true(recs[1].snapshot)
    assert.same({ id = "2" }, recs[2].key)
    assert.equals("update", recs[3].op)
    assert.equals("select 1", recs[3].before.content)
    assert.equals("select 11", recs[3].after.content)
    assert.equals("delete", recs[4].op)
    assert.equals(cjson.null, recs[4].after)
    assert.matches("^mysql%-bin%.%d+$", recs[4].pos.file)
  end)

  it("advances the checkpoint on an idle source (heartbeats and unrelated traffic)", function()
    local cp = fresh("idle")
    src:sql("CREATE DATABASE IF NOT EXISTS other; CREATE TABLE IF NOT EXISTS other.t (id INT PRIMARY KEY AUTO_INCREMENT, v INT)")
    local logf = home .. "/idle.log"
    local pid, rc_of = cli.spawn_rc({ "run", "pipelines/binlog_to_mysql.lua", "--set", "source_uri=" .. src.uri,
      "--set", "sink_uri=" .. sink.uri, "--set", "checkpoint=" .. cp }, logf, { env = { MOCDC_HOME = home } })
    finally(function() if cli.alive(pid) then util.kill(pid, 9) end end)
    local function wm()
      local r = sink:rows("SELECT position FROM mocdc.watermark WHERE source_table = 'source_db.orders' AND phase = 'cdc'")
      return r[1] and cjson.decode(r[1][1]) or nil
    end
    local before = cli.eventually(wm, 20, "the watermark after the full copy")
    for i = 1, 5 do src:sql("INSERT INTO other.t (v) VALUES (" .. i .. ")") end
    cli.eventually(function()
      local now = wm()
      return now.file ~= before.file or now.pos > before.pos
    end, 10, "the watermark to advance on an idle source")
    -- SIGTERM: stops at a safe point, exit 130
    util.kill(pid, 15)
    assert.equals(130, cli.eventually(rc_of, 30, "mocdc to exit after SIGTERM"))
  end)

  it("takes the snapshot position under a brief read lock (MySQL's way) with the same result", function()
    local cp = fresh("lock")
    local rc, _, err = run(cp, { "--set", "snapshot_lock=true" })
    assert.equals(0, rc, err)
    src:sql("UPDATE source_db.orders SET status = 'Locked' WHERE order_id = 2; DELETE FROM source_db.orders WHERE order_id = 5")
    rc, _, err = run(cp, { "--set", "snapshot_lock=true" })
    assert.equals(0, rc, err)
    local q = "SELECT order_id, status FROM %s ORDER BY order_id"
    local a = src:rows(q:format("source_db.orders"))
    assert.same(a, sink:rows(q:format("analytics_db.orders_backup")))
    assert.equals(4, #a)
    assert.equals("Locked", a[2][2])
  end)

  it("starts from a GTID without a full copy", function()
    local cp = fresh("gtid")
    local gtid = src:rows("SELECT @@gtid_binlog_pos")[1][1]
    src:sql("INSERT INTO source_db.orders VALUES (20, 120, NULL, 3.00, 'After')")
    local rc, _, err = run(cp, { "--set", "start_gtid=" .. gtid })
    assert.equals(0, rc, err)
    assert.same({ { "20", "After" } }, (sink:rows("SELECT order_id, status FROM analytics_db.orders_backup ORDER BY order_id")))
  end)

  it("isolates errors per table: one failing table stops, the others stay in sync", function()
    local cp = fresh("pertable")
    src:sql([[DROP DATABASE IF EXISTS iso; CREATE DATABASE iso;
      CREATE TABLE iso.good (id INT PRIMARY KEY, v INT); CREATE TABLE iso.bad (id INT PRIMARY KEY, v INT);]])
    sink:sql([[DROP DATABASE IF EXISTS iso; CREATE DATABASE iso;
      CREATE TABLE iso.good (id INT PRIMARY KEY, v INT);
      CREATE TABLE iso.bad (id INT PRIMARY KEY, v INT, CONSTRAINT small CHECK (v < 100));]])
    local args = { "--set", "tables=iso.good,iso.bad" }
    local rc, _, err = run(cp, args)
    assert.equals(0, rc, err)
    src:sql([[INSERT INTO iso.good VALUES (1, 1); INSERT INTO iso.bad VALUES (1, 5);
      START TRANSACTION; INSERT INTO iso.good VALUES (2, 2); INSERT INTO iso.bad VALUES (2, 500); COMMIT;
      INSERT INTO iso.good VALUES (3, 3);]])
    rc, _, err = run(cp, args)
    assert.equals(1, rc, err)
    assert.is_true(cli.one_line(err), err)
    assert.matches("1 table%(s%) stopped, the others are in sync: iso%.bad: .*small", err)
    assert.same({ { "1", "1" }, { "2", "2" }, { "3", "3" } }, (sink:rows("SELECT * FROM iso.good ORDER BY id")))
    -- the failed table stays at its last committed watermark (nothing partial)...
    assert.same({}, (sink:rows("SELECT * FROM iso.bad ORDER BY id")))
    -- ...and catches up once the cause is fixed
    sink:sql("ALTER TABLE iso.bad DROP CONSTRAINT small")
    rc, _, err = run(cp, args)
    assert.equals(0, rc, err)
    assert.same({ { "1", "5" }, { "2", "500" } }, (sink:rows("SELECT * FROM iso.bad ORDER BY id")))
    assert.same({ { "1", "1" }, { "2", "2" }, { "3", "3" } }, (sink:rows("SELECT * FROM iso.good ORDER BY id")))
  end)

  it("reports a purged binlog with what to do", function()
    local cp = fresh("purge")
    local rc, _, err = run(cp)
    assert.equals(0, rc, err)
    -- the pipeline is stopped; meanwhile the source rotates and purges its binlogs
    src:sql("INSERT INTO source_db.orders VALUES (8, 108, NULL, 2.00, 'New')")
    src:sql("FLUSH BINARY LOGS")
    local cur = src:rows("SHOW MASTER STATUS")[1][1]
    -- a replica connection still closing may hold the old file for a moment
    local deadline = util.mono() + 15
    repeat
      src:sql("PURGE BINARY LOGS TO '" .. cur .. "'")
      local first = src:rows("SHOW BINARY LOGS")[1][1]
      if first == cur then break end
      util.sleep(0.3)
    until util.mono() > deadline
    assert.equals(cur, src:rows("SHOW BINARY LOGS")[1][1])
    rc, _, err = run(cp)
    assert.equals(1, rc, err)
    assert.is_true(cli.one_line(err), err)
    assert.matches("purged", err)
    assert.matches("full copy", err)
  end)
end)
