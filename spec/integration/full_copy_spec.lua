-- Issue 2: the first end-to-end sync. Seed 000's orders scenario, the "all
-- types" table, transforms, resume after kill -9, and every bad input giving
-- one clear line, a non-zero exit and no checkpoint.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local all_types = require("spec.support.all_types")

local SEED_ROWS = {
  { "1", "101", "2024-01-15 14:30:00", "99.99", "Shipped" },
  { "2", "102", "2024-02-10 10:00:00", "149.50", "Delivered" },
  { "3", "103", "2024-03-05 16:45:00", "75.00", "Processing" },
  { "4", "104", "2024-04-20 09:15:00", "200.00", "Shipped" },
  { "5", "105", "2024-05-12 14:00:00", "49.99", "Delivered" },
}

local ORDERS_DDL = [[
CREATE TABLE source_db.orders (
    order_id INT PRIMARY KEY,
    customer_id INT,
    order_date DATETIME,
    amount DECIMAL(10, 2),
    status VARCHAR(20)
)]]

mdb.describe("full copy (issue 2)", function()
  local src, sink, home, scripts
  setup(function()
    src = mdb.start({ name = "fc-source", binlog = true })
    sink = mdb.start({ name = "fc-sink" })
    home = cli.tmpdir()
    scripts = cli.tmpdir()
  end)
  teardown(function() os.execute("rm -rf " .. home .. " " .. scripts) end)

  local function reset()
    src:sql("DROP DATABASE IF EXISTS source_db; CREATE DATABASE source_db; " .. ORDERS_DDL .. ";" ..
      [[INSERT INTO source_db.orders (order_id, customer_id, order_date, amount, status) VALUES
       (1, 101, '2024-01-15 14:30:00', 99.99, 'Shipped'),
       (2, 102, '2024-02-10 10:00:00', 149.50, 'Delivered'),
       (3, 103, '2024-03-05 16:45:00', 75.00, 'Processing'),
       (4, 104, '2024-04-20 09:15:00', 200.00, 'Shipped'),
       (5, 105, '2024-05-12 14:00:00', 49.99, 'Delivered');]])
    sink:sql("DROP DATABASE IF EXISTS analytics_db; DROP DATABASE IF EXISTS mocdc; CREATE DATABASE analytics_db; " ..
      ORDERS_DDL:gsub("source_db.orders", "analytics_db.orders_backup"))
    os.execute("rm -rf " .. home .. "/*")
  end

  local function run(extra, env)
    local args = { "run", "pipelines/full_copy.lua", "--set", "source_uri=" .. src.uri, "--set", "sink_uri=" .. sink.uri,
      "--set", "checkpoint=" .. home .. "/cp" }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    return cli.run(args, { env = env or { MOCDC_HOME = home } })
  end

  it("copies seed 000's orders into analytics_db.orders_backup exactly", function()
    reset()
    local rc, out, err = run()
    assert.equals(0, rc, err)
    assert.matches("source_db.orders %-> analytics_db.orders_backup: 5 rows copied", out)
    assert.same(SEED_ROWS, (sink:rows("SELECT * FROM analytics_db.orders_backup ORDER BY order_id")))
    assert.not_matches(mdb.PASSWORD, out .. err)
    -- a second run sees the watermark and copies nothing again
    rc, out = run()
    assert.equals(0, rc)
    assert.matches("already in sync", out)
  end)

  it("creates the sink database and table from the source DDL when missing", function()
    reset()
    sink:sql("DROP DATABASE analytics_db")
    local rc, _, err = run()
    assert.equals(0, rc, err)
    assert.same(SEED_ROWS, (sink:rows("SELECT * FROM analytics_db.orders_backup ORDER BY order_id")))
    local ddl = sink:rows("SHOW CREATE TABLE analytics_db.orders_backup")[1][2]
    assert.matches("PRIMARY KEY %(`order_id`%)", ddl)
  end)

  it("round-trips every MySQL type exactly", function()
    sink:sql("DROP DATABASE IF EXISTS types_dst; DROP DATABASE IF EXISTS mocdc")
    src:sql([[DROP DATABASE IF EXISTS types_db; CREATE DATABASE types_db;
      ]] .. all_types.ddl("types_db.all_types") .. ";" .. all_types.insert("types_db.all_types"))
    local rc, _, err = cli.run({ "run", "pipelines/full_copy.lua", "--set", "source_uri=" .. src.uri,
      "--set", "sink_uri=" .. sink.uri, "--set", "tables=types_db.all_types:types_dst.all_types",
      "--set", "checkpoint=" .. home .. "/types" }, { env = { MOCDC_HOME = home } })
    assert.equals(0, rc, err)
    local cols = all_types.COMPARE
    local a = src:rows("SELECT " .. cols .. " FROM types_db.all_types ORDER BY id")
    local b = sink:rows("SELECT " .. cols .. " FROM types_dst.all_types ORDER BY id")
    assert.equals(3, #a)
    assert.same(a, b)
    assert.equals("18446744073709551615", b[1][11])
    assert.equals("-838:59:59.000000", b[1][18])
    assert.equals("2038-01-19 03:14:07.999999", b[1][20]) -- TIMESTAMP did not shift
    local ca = src:rows("CHECKSUM TABLE types_db.all_types EXTENDED")[1][2]
    local cb = sink:rows("CHECKSUM TABLE types_dst.all_types EXTENDED")[1][2]
    assert.equals(ca, cb)
  end)

  it("runs the transform example: filter, mask, rename", function()
    src:sql([[DROP DATABASE IF EXISTS shop; CREATE DATABASE shop;
      CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(50), email VARCHAR(100), status VARCHAR(20));
      INSERT INTO shop.customers VALUES (1, 'Alice', 'alice@example.com', 'Active'),
        (2, 'Test User', 'test@example.com', 'Test'), (3, 'Bob', NULL, 'Active');]])
    sink:sql("DROP DATABASE IF EXISTS analytics_db; DROP DATABASE IF EXISTS mocdc")
    local rc, _, err = cli.run({ "run", "examples/transform.lua", "--set", "source_uri=" .. src.uri,
      "--set", "sink_uri=" .. sink.uri, "--set", "checkpoint=" .. home .. "/tr" }, { env = { MOCDC_HOME = home } })
    assert.equals(0, rc, err)
    assert.same({ { "1", "Alice", "a****@example.com", "Active" }, { "3", "Bob", mdb.NULL, "Active" } },
      (sink:rows("SELECT id, full_name, email, status FROM analytics_db.customers_clean ORDER BY id")))
  end)

  it("resumes after kill -9 without losing or doubling rows", function()
    src:sql([[DROP DATABASE IF EXISTS big; CREATE DATABASE big;
      CREATE TABLE big.t (id INT PRIMARY KEY, v VARCHAR(100), n BIGINT);
      USE big; INSERT INTO big.t SELECT seq, CONCAT('row-', seq, REPEAT('x', seq % 50)), seq * 7 FROM seq_1_to_200000;]])
    sink:sql("DROP DATABASE IF EXISTS big; DROP DATABASE IF EXISTS mocdc")
    local args = { "run", "pipelines/full_copy.lua", "--set", "source_uri=" .. src.uri, "--set", "sink_uri=" .. sink.uri,
      "--set", "tables=big.t", "--set", "chunk_size=2000", "--set", "checkpoint=" .. home .. "/big" }
    local log = home .. "/big.log"
    local function sink_count()
      return tonumber(sink:rows("SELECT COUNT(*) FROM big.t")[1][1])
    end
    -- each life is killed only after it committed a chunk (progress), and before the copy is
    -- done: the sink has some but not all rows at every kill
    local before = 0
    for life = 1, 3 do
      local pid = cli.spawn(args, log, { env = { MOCDC_HOME = home } })
      local ok, err = pcall(cli.eventually, function() return sink_count() > before end, 30,
        "life " .. life .. " to commit a chunk")
      require("mocdc.util.lib").kill(pid, 9)
      assert(cli.wait(pid, 10), "mocdc still running after SIGKILL")
      assert(ok, err)
      local n = sink_count()
      assert.is_true(n > before and n < 200000,
        string.format("kill %d landed mid-copy: sink had %d rows (before: %d, all: 200000)", life, n, before))
      before = n
    end
    -- the later lives resumed after a key, not from the start
    local _, resumed = (io.open(log):read("*a")):gsub("big.t %-> big.t: resuming full copy after key", "")
    assert.equals(2, resumed)
    local rc, _, err = cli.run(args, { env = { MOCDC_HOME = home } })
    assert.equals(0, rc, err)
    local a = src:rows("SELECT COUNT(*), SUM(CRC32(CONCAT(id, v, n))) FROM big.t")
    local b = sink:rows("SELECT COUNT(*), SUM(CRC32(CONCAT(id, v, n))) FROM big.t")
    assert.same(a, b)
    assert.equals("200000", b[1][1])
  end)

  describe("bad input: one clear line, the exit code for its kind, no checkpoint", function()
    -- no watermark row: the table is empty or does not exist; any other error is raised
    local function no_watermark()
      local ok, rows = pcall(sink.rows, sink, "SELECT COUNT(*) FROM mocdc.watermark")
      if not ok then
        assert.matches("ERROR 1146 (42S02) at line 1: Table 'mocdc.watermark' doesn't exist", rows, 1, true)
        return true
      end
      return rows[1][1] == "0"
    end
    -- code: the exit status (README "Exit codes": 1 runtime, 2 usage or configuration)
    local function expect_fail(code, args, pattern, env)
      reset()
      local rc, out, err = cli.run(args, { env = env or { MOCDC_HOME = home } })
      assert.equals(code, rc, err)
      assert.is_true(cli.one_line(err), "expected one line on stderr, got: " .. err)
      assert.matches(pattern, err)
      assert.not_matches(mdb.PASSWORD, out .. err)
      assert.is_true(no_watermark())
      assert.equals("0", sink:rows("SELECT COUNT(*) FROM analytics_db.orders_backup")[1][1])
      return err
    end
    local function base(over)
      local a = { "run", "pipelines/full_copy.lua", "--set", "source_uri=" .. src.uri, "--set", "sink_uri=" .. sink.uri,
        "--set", "checkpoint=" .. home .. "/bad" }
      for _, x in ipairs(over or {}) do a[#a + 1] = x end
      return a
    end

    it("malformed URI", function()
      expect_fail(2, base({ "--set", "source_uri=mysql://root:" .. mdb.PASSWORD .. "@127.0.0.1:abc" }),
        "^mocdc: error: invalid source URI 'mysql://root:%*%*%*%*%*%*@127.0.0.1:abc': port 'abc' is not a number")
    end)
    it("wrong password", function()
      expect_fail(1, base({ "--set", "sink_uri=mysql://root:wrong@127.0.0.1:" .. sink.port }),
        "^mocdc: error: cannot connect to sink root@127.0.0.1:" .. sink.port .. ": Access denied")
    end)
    it("unreachable host", function()
      expect_fail(1, base({ "--set", "source_uri=mysql://root:x@127.0.0.1:1" }),
        "^mocdc: error: cannot connect to source root@127.0.0.1:1: ")
    end)
    it("missing source table", function()
      expect_fail(2, base({ "--set", "tables=source_db.nope:analytics_db.orders_backup" }),
        "^mocdc: error: source table source_db.nope does not exist on root@127.0.0.1:" .. src.port)
    end)
    it("invalid regex", function()
      local p = scripts .. "/regex.lua"
      local f = io.open(p, "w")
      f:write("save.append(load.snapshot { uri = var 'source_uri', databaseNamePattern = 'source_(db', " ..
        "tableNamePattern = 'orders' }, var 'sink_uri', { target = 'analytics_db.{table}_backup' })\n")
      f:close()
      expect_fail(2, { "run", p, "--set", "source_uri=" .. src.uri, "--set", "sink_uri=" .. sink.uri },
        "^mocdc: error: databaseNamePattern: invalid regex 'source_%(db': missing closing parenthesis")
    end)
    it("Lua syntax error", function()
      local p = scripts .. "/syntax.lua"
      local f = io.open(p, "w")
      f:write("local s = load.snapshot {\n  uri = var 'source_uri'\n  tables = 'x'\n}\n")
      f:close()
      expect_fail(2, { "run", p }, "^mocdc: error: .*syntax%.lua:3: '}' expected %(to close '{' at line 1%) near 'tables'")
    end)
    it("error raised inside a transform", function()
      local p = scripts .. "/boom.lua"
      local f = io.open(p, "w")
      f:write("local s = load.snapshot { uri = var 'source_uri', tables = 'source_db.orders:analytics_db.orders_backup' }\n" ..
        "save.append(s:map(function(r)\n  if r.order_id == '3' then error('bad order ' .. r.order_id) end\n  return r\nend), " ..
        "var 'sink_uri', { checkpointLocation = '" .. home .. "/boom' })\n")
      f:close()
      expect_fail(1, { "run", p, "--set", "source_uri=" .. src.uri, "--set", "sink_uri=" .. sink.uri },
        "^mocdc: error: transform map at .*boom%.lua:2 failed on source_db%.orders row %(order_id=3%): .*boom%.lua:3: bad order 3")
    end)
    it("a full sink", function()
      reset()
      src:sql("USE source_db; INSERT INTO orders SELECT seq + 100, seq, NOW(), seq, REPEAT('s', 20) FROM seq_1_to_5000")
      -- a MEMORY table limited to 16 KiB: the server answers 1114 "The table ... is full"
      sink:sql("DROP TABLE analytics_db.orders_backup; SET SESSION max_heap_table_size = 16384; " ..
        "CREATE TABLE analytics_db.orders_backup (order_id INT PRIMARY KEY, customer_id INT, order_date DATETIME, " ..
        "amount DECIMAL(10,2), status VARCHAR(20)) ENGINE=MEMORY")
      local rc, _, err = run()
      assert.equals(1, rc, err)
      assert.is_true(cli.one_line(err), err)
      assert.matches("is full", err)
      assert.matches("free space", err)
      assert.is_true(no_watermark())
    end)

    it("sink table with different columns", function()
      reset()
      sink:sql("DROP TABLE analytics_db.orders_backup; CREATE TABLE analytics_db.orders_backup (order_id INT PRIMARY KEY, " ..
        "customer_id INT, order_date DATETIME, amount DECIMAL(10,2), status VARCHAR(10))")
      local rc, _, err = run()
      assert.equals(2, rc, err) -- found before anything is written: a configuration error
      assert.is_true(cli.one_line(err), err)
      assert.equals("mocdc: error: schema mismatch: column 'status' is varchar(20) in source_db.orders but varchar(10) " ..
        "in sink table analytics_db.orders_backup; make the sink table match the source, or drop it and mocdc will create it\n", err)
      assert.is_true(no_watermark())
    end)
  end)
end)
