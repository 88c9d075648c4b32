-- Issue 5 step 2: every statement the MatrixOne source and the MatrixOne sink
-- dialect generate, pinned (MatrixOne cannot run here; the same engine runs
-- against MariaDB in spec/integration/snapshot_diff_spec.lua).
local batch = require("mocdc.batch")
local diff = require("mocdc.engine.snapdiff_sql")
local mo = require("mocdc.engine.matrixone")
local sqlbuild = require("mocdc.sqlbuild")
local sql = mo.sql
local NULL = batch.NULL

-- A connection double: records statements, answers from a script.
local function fake(answers)
  local c = { label = "root@mo:6001", flavour = "matrixone", log = {} }
  local function answer(s)
    for _, a in ipairs(answers or {}) do
      if s:find(a[1], 1, true) then return a[2], a[3], a[4] end
    end
    return {}, {}
  end
  function c:exec(s)
    self.log[#self.log + 1] = s
    local r, e, code = answer(s)
    if r == nil then return nil, e, code end
    return 0
  end
  function c:query(s)
    self.log[#self.log + 1] = s
    return answer(s)
  end
  function c:stream(s)
    self.log[#self.log + 1] = s
    local rows, cols, code = answer(s)
    if rows == nil then return nil, cols, code end
    local done = false
    return {
      -- proj {cols =, flag =}: what host/conn.c's projection does (pinned against a real server in
      -- spec/integration/issue10_cursor_projection_spec.lua)
      fetch = function(_, b, _, _, proj)
        if done then return 0 end
        done = true
        for _, r in ipairs(rows) do
          if proj then
            local img = {}
            for j, k in ipairs(proj.cols) do img[j] = r[k] end
            local op = r[proj.flag]:lower()
            b:add(op, op ~= "insert" and img or nil, op ~= "delete" and img or nil)
          else
            b:add("insert", nil, r)
          end
        end
        return #rows
      end,
      close = function() end,
    }, cols
  end
  function c:escape(s) return (s:gsub("'", "\\'")) end
  return c
end

local orders = {
  src_db = "source_db", src_table = "orders", src_label = "source_db.orders",
  columns = {
    { name = "order_id", class = "num", data_type = "int" },
    { name = "customer_id", class = "num", data_type = "int" },
    { name = "order_date", class = "str", data_type = "datetime" },
    { name = "amount", class = "num", data_type = "decimal" },
    { name = "status", class = "str", data_type = "varchar" },
  },
  key = { "order_id" }, key_idx = { 1 },
}

describe("MatrixOne source statements", function()
  it("creates, times and drops snapshots", function()
    assert.equals("mocdc_task_0190_ab_", sql.snapshot_prefix("task:0190-AB"))
    assert.equals("CREATE SNAPSHOT mocdc_p_1 FOR DATABASE `source_db`",
      sql.create_snapshot("mocdc_p_1", { level = "database", db = "source_db" }))
    assert.equals("CREATE SNAPSHOT mocdc_p_1 FOR TABLE `source_db` `orders`",
      sql.create_snapshot("mocdc_p_1", { level = "table", db = "source_db", table = "orders" }))
    assert.equals("CREATE SNAPSHOT mocdc_p_1 FOR ACCOUNT `acc1`",
      sql.create_snapshot("mocdc_p_1", { level = "account", account = "acc1" }))
    assert.equals("SELECT ts FROM mo_catalog.mo_snapshots WHERE sname = 'mocdc_p_1'", sql.snapshot_ts("mocdc_p_1"))
    assert.equals("SELECT sname FROM mo_catalog.mo_snapshots WHERE sname LIKE 'mocdc\\\\_p\\\\_%' ORDER BY sname",
      sql.list_snapshots("mocdc_p_"))
    assert.equals("DROP SNAPSHOT IF EXISTS mocdc_p_1", sql.drop_snapshot("mocdc_p_1"))
  end)

  it("reads changes with DATA BRANCH DIFF between two snapshots", function()
    assert.equals("DATA BRANCH DIFF `source_db`.`orders`{SNAPSHOT = 'mocdc_p_2'} AGAINST " ..
      "`source_db`.`orders`{SNAPSHOT = 'mocdc_p_1'}", sql.branch_diff("source_db", "orders", "mocdc_p_2", "mocdc_p_1"))
  end)

  it("reads the full copy at the snapshot", function()
    assert.equals("SELECT `order_id`, `amount` FROM `source_db`.`orders`{SNAPSHOT = 'mocdc_p_1'} WHERE " ..
      "((`order_id` > 3)) ORDER BY `order_id`",
      sql.select_at("SELECT `order_id`, `amount` FROM `source_db`.`orders` WHERE ((`order_id` > 3)) ORDER BY `order_id`",
        "source_db", "orders", "mocdc_p_1"))
    -- a table name with pattern characters
    assert.equals("SELECT * FROM `d-1`.`t%x`{SNAPSHOT = 's'}", sql.select_at("SELECT * FROM `d-1`.`t%x`", "d-1", "t%x", "s"))
  end)

  it("checks PITR coverage and says how to create one", function()
    local t = { { src_db = "source_db", src_table = "orders" } }
    local function row(level, acc, db, tbl, len, unit) return { "p", "x", "x", level, acc, db, tbl, len, unit } end
    assert.is_nil(mo.pitr_gap({ row("database", "sys", "source_db", "*", "2", "h") }, t, "sys", 2))
    assert.is_nil(mo.pitr_gap({ row("account", "sys", "*", "*", "1", "d") }, t, "sys", 2))
    assert.is_nil(mo.pitr_gap({ row("table", "sys", "source_db", "orders", "1", "mo") }, t, "sys", 2))
    assert.is_nil(mo.pitr_gap({ row("cluster", "*", "*", "*", "1", "y") }, t, "sys", 2))
    assert.equals("MatrixOne source root@mo:6001 has no PITR of at least 2 h covering source_db.orders: snapshot " ..
      "diffs need the history kept (MatrixOne's own CDC requires the same); create one, e.g. CREATE PITR mocdc_pitr " ..
      "FOR DATABASE `source_db` RANGE 2 'h', or set pitr = false",
      mo.pitr_gap({ row("database", "sys", "source_db", "*", "1", "h"), row("database", "sys", "other", "*", "9", "d") },
        t, "sys", 2, "root@mo:6001"))
    assert.is_string(mo.pitr_gap({ row("account", "acc2", "*", "*", "1", "d") }, t, "acc1", 2))
  end)
end)

describe("MatrixOne source on a connection", function()
  it("sends exactly these statements for a snapshot round", function()
    local c = fake({
      { "SELECT ts FROM mo_catalog.mo_snapshots WHERE sname = 'mocdc_p_2'", { { "1732230000123456789" } } },
      { "SELECT sname FROM", { { "mocdc_p_1" }, { "mocdc_p_2" } } },
      { "SHOW PITR", { { "p", "x", "x", "database", "sys", "source_db", "*", "2", "h" } } },
    })
    local src = mo.wrap(c, { uri = "mysql://sys#root:111@mo:6001" })
    src:check_pitr({ orders })
    local ts = src:create_snapshot("mocdc_p_2", src:scope({ orders }))
    assert.equals("1732230000123456789", ts)
    assert.is_false(src:snapshot_exists("mocdc_p_0"))
    assert.same({ "mocdc_p_1", "mocdc_p_2" }, src:list_snapshots("mocdc_p_"))
    src:drop_snapshot("mocdc_p_1")
    assert.same({
      "SHOW PITR",
      "CREATE SNAPSHOT mocdc_p_2 FOR DATABASE `source_db`",
      "SELECT ts FROM mo_catalog.mo_snapshots WHERE sname = 'mocdc_p_2'",
      "SELECT ts FROM mo_catalog.mo_snapshots WHERE sname = 'mocdc_p_0'",
      "SELECT sname FROM mo_catalog.mo_snapshots WHERE sname LIKE 'mocdc\\\\_p\\\\_%' ORDER BY sname",
      "DROP SNAPSHOT IF EXISTS mocdc_p_1",
    }, c.log)
    assert.same({ level = "account", account = "sys" },
      src:scope({ orders, { src_db = "other", src_table = "x" } }))
  end)

  it("turns DATA BRANCH DIFF rows into changes and the MatrixOne sink dialect", function()
    local cols = { { name = "diff orders against orders", class = "str" }, { name = "flag", class = "str" },
      { name = "order_id", class = "num" }, { name = "customer_id", class = "num" }, { name = "order_date", class = "str" },
      { name = "amount", class = "num" }, { name = "status", class = "str" } }
    local c = fake({ { "DATA BRANCH DIFF", {
      { "orders", "INSERT", "6", "106", "2024-06-01 12:00:00", "300.00", "Processing" },
      { "orders", "UPDATE", "3", "103", "2024-03-05 16:45:00", "75.00", "Delivered" },
      { "orders", "DELETE", "2", "102", "2024-02-10 10:00:00", "149.50", "Delivered" },
    }, cols } })
    local src = mo.wrap(c, {})
    local r = src:diff_reader(orders, "mocdc_p_2", "mocdc_p_1")
    local changes = batch.new(orders.columns)
    assert.equals(3, r:fetch(changes, 5000))
    assert.equals(0, r:fetch(changes, 5000))
    r:close()
    assert.same({ 1, 1, 1 }, { changes:counts() })
    assert.same({ "DATA BRANCH DIFF `source_db`.`orders`{SNAPSHOT = 'mocdc_p_2'} AGAINST " ..
      "`source_db`.`orders`{SNAPSHOT = 'mocdc_p_1'}" }, c.log)
    assert.equals(3, changes:count())
    local stmts = sqlbuild.build(changes, { table = "`analytics_db`.`orders_backup`", key = { 1 }, mode = "replace",
      dialect = "matrixone" })
    assert.same({
      "DELETE FROM `analytics_db`.`orders_backup` WHERE `order_id` IN (2)",
      "REPLACE INTO `analytics_db`.`orders_backup` (`order_id`,`customer_id`,`order_date`,`amount`,`status`) VALUES " ..
        "(6,106,'2024-06-01 12:00:00',300.00,'Processing'),(3,103,'2024-03-05 16:45:00',75.00,'Delivered')",
    }, stmts)
  end)

  it("knows when DATA BRANCH DIFF is not there", function()
    local c = fake({ { "DATA BRANCH DIFF", nil, "You have an error in your SQL syntax", 1064 } })
    local src = mo.wrap(c, {})
    local b, err, code = src:diff_reader(orders, "s2", "s1")
    assert.is_nil(b)
    assert.is_true(mo.unsupported(err, code))
    assert.is_false(mo.unsupported("Lost connection to server", 2013))
  end)

  it("copies at the snapshot through the snapshot source's SELECT", function()
    local c = fake({ { "SELECT", { { "1" } }, { { name = "order_id", class = "num" } } } })
    local base = { select_sql = function(_, t, after)
      return "SELECT `order_id` FROM `source_db`.`orders`" .. (after and (" WHERE `order_id` > " .. after[1]) or "") ..
        " ORDER BY `order_id`"
    end }
    local src = mo.wrap(c, {}, base)
    src.snap = "mocdc_p_7"
    src:cursor(orders, { "5" })
    assert.same({ "SELECT `order_id` FROM `source_db`.`orders`{SNAPSHOT = 'mocdc_p_7'} WHERE `order_id` > 5 " ..
      "ORDER BY `order_id`" }, c.log)
  end)
end)

describe("MatrixOne sink dialect and chunk fallback", function()
  it("writes composite-key deletes as (a = 1 and b = 2) or ... and never repeats a key in one REPLACE", function()
    local cols = { { name = "tenant_id", class = "num" }, { name = "order_code", class = "str" },
      { name = "amount", class = "num" } }
    local b = batch.new(cols)
    b:add("insert", nil, { "100", "A100", "120.50" })
    b:add("update", { "100", "A100", "120.50" }, { "100", "A100", "130.50" })
    b:add("delete", { "100", "A101", "80.00" }, nil)
    b:add("delete", { "101", "B'2", NULL }, nil)
    local stmts = sqlbuild.build(b, { table = "`test`.`orders`", key = { 1, 2 }, dialect = "matrixone" })
    assert.same({
      "DELETE FROM `test`.`orders` WHERE (`tenant_id` = 100 and `order_code` = 'A101') or " ..
        "(`tenant_id` = 101 and `order_code` = 'B\\'2')",
      "REPLACE INTO `test`.`orders` (`tenant_id`,`order_code`,`amount`) VALUES (100,'A100',130.50)",
    }, stmts)
  end)

  it("checksums chunks at a snapshot with CRC32 of MD5 / SHA1 (no CONV on MatrixOne)", function()
    local ref = sql.table_ref("source_db", "orders", "mocdc_p_2")
    local stmts = diff.sums_sql(ref, { orders.columns[1], orders.columns[5] }, { orders.columns[1] },
      { { hi = { "100" } }, { lo = { "100" } } }, { mode = "md5crc" })
    local x = "CONCAT_WS('#', `order_id`, `status`, LENGTH(`status`), CONCAT(ISNULL(`order_id`), ISNULL(`status`)))"
    assert.same({
      "SELECT 1, COUNT(*), COALESCE(SUM(CRC32(MD5(" .. x .. "))), 0), COALESCE(SUM(CRC32(SHA1(" .. x .. "))), 0) " ..
        "FROM `source_db`.`orders`{SNAPSHOT = 'mocdc_p_2'} WHERE `order_id` < 100 UNION ALL " ..
      "SELECT 2, COUNT(*), COALESCE(SUM(CRC32(MD5(" .. x .. "))), 0), COALESCE(SUM(CRC32(SHA1(" .. x .. "))), 0) " ..
        "FROM `source_db`.`orders`{SNAPSHOT = 'mocdc_p_2'} WHERE `order_id` >= 100",
    }, stmts)
    assert.equals("SELECT `order_id`, `status` FROM `source_db`.`orders`{SNAPSHOT = 'mocdc_p_1'} WHERE `order_id` >= 1 " ..
      "AND `order_id` < 9", diff.select_sql(sql.table_ref("source_db", "orders", "mocdc_p_1"),
        { orders.columns[1], orders.columns[5] }, { orders.columns[1] }, { "1" }, { "9" }))
  end)
end)

describe("MatrixOne pipelines (seeds 000 and 001 as scripts)", function()
  local pipeline = require("mocdc.pipeline.env")
  local function declare(path)
    local ok, ctx = pcall(pipeline.declare, path, {})
    assert(ok, require("mocdc.errors").message(ctx))
    return ctx
  end

  it("pipelines/mo_to_mysql.lua: source_db.orders -> analytics_db.orders_backup every 10 s", function()
    local ctx = declare("pipelines/mo_to_mysql.lua")
    local job = ctx.jobs[1]
    assert.equals("matrixone", job.stream.source.kind)
    assert.equals("source_db.orders:analytics_db.orders_backup", job.stream.source.opts.tables)
    assert.equals("mysql://root:111@127.0.0.1:6001", job.stream.source.opts.uri)
    assert.equals("mysql://root:111@127.0.0.1:3306", job.target)
    assert.equals(10, job.opts.duration)
  end)

  it("pipelines/mo_to_mo.lua: production_db.user_activities -> analytics_db.analytics_activities, MatrixOne dialect", function()
    local ctx = declare("pipelines/mo_to_mo.lua")
    local job = ctx.jobs[1]
    assert.equals("matrixone", job.stream.source.kind)
    assert.equals("production_db.user_activities:analytics_db.analytics_activities", job.stream.source.opts.tables)
    assert.equals("matrixone", job.opts.sinkType)
  end)
end)
