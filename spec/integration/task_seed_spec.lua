-- Issue 4: seeds 000 and 001 reproduced command for command with `mocdc task`
-- (./mo_cdc -> mocdc), MariaDB servers in both roles.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local cjson = require("cjson")
local util = require("mocdc.util.lib")

local eventually = cli.eventually

mdb.describe("mo_cdc walkthroughs with mocdc task (issue 4)", function()
  local src, sink, home
  setup(function()
    src = mdb.start({ name = "task-source", binlog = true })
    sink = mdb.start({ name = "task-sink" })
    home = cli.tmpdir()
  end)
  teardown(function()
    cli.run({ "task", "drop", "--all", "--source-uri", src.uri, "--state-dir", home })
    os.execute("rm -rf " .. home)
  end)

  local function task(...)
    local args = { "task", ... }
    args[#args + 1] = "--state-dir"
    args[#args + 1] = home
    return cli.run(args)
  end

  local function sink_rows(q) return sink:rows(q) end

  it("seed 000: MatrixOne-to-MySQL walkthrough (orders -> orders_backup)", function()
    src:sql([[CREATE DATABASE source_db;
      CREATE TABLE source_db.orders (
          order_id INT PRIMARY KEY,
          customer_id INT,
          order_date DATETIME,
          amount DECIMAL(10, 2),
          status VARCHAR(20)
      );
      INSERT INTO source_db.orders (order_id, customer_id, order_date, amount, status) VALUES
       (1, 101, '2024-01-15 14:30:00', 99.99, 'Shipped'),
       (2, 102, '2024-02-10 10:00:00', 149.50, 'Delivered'),
       (3, 103, '2024-03-05 16:45:00', 75.00, 'Processing'),
       (4, 104, '2024-04-20 09:15:00', 200.00, 'Shipped'),
       (5, 105, '2024-05-12 14:00:00', 49.99, 'Delivered');]])
    sink:sql([[CREATE DATABASE IF NOT EXISTS analytics_db;
      CREATE TABLE analytics_db.orders_backup (
          order_id INT PRIMARY KEY,
          customer_id INT,
          order_date DATETIME,
          amount DECIMAL(10, 2),
          status VARCHAR(20)
      );]])
    local rc, out, err = task("create",
      "--task-name", "task1",
      "--source-uri", src.uri,
      "--sink-type", "mysql",
      "--sink-uri", sink.uri,
      "--tables", "source_db.orders:analytics_db.orders_backup",
      "--level", "account",
      "--account", "sys")
    assert.equals(0, rc, err)
    assert.not_matches(mdb.PASSWORD, out .. err)

    local full = {
      { "1", "101", "2024-01-15 14:30:00", "99.99", "Shipped" },
      { "2", "102", "2024-02-10 10:00:00", "149.50", "Delivered" },
      { "3", "103", "2024-03-05 16:45:00", "75.00", "Processing" },
      { "4", "104", "2024-04-20 09:15:00", "200.00", "Shipped" },
      { "5", "105", "2024-05-12 14:00:00", "49.99", "Delivered" },
    }
    local q = "select * from analytics_db.orders_backup order by order_id"
    eventually(function() return #sink_rows(q) == 5 end, 30, "full copy")
    assert.same(full, (sink_rows(q)))

    -- task show: the seed's JSON fields, masked passwords
    rc, out, err = task("show", "--task-name", "task1", "--source-uri", src.uri)
    assert.equals(0, rc, err)
    local shown = cjson.decode(out)
    assert.equals(1, #shown)
    local keys = {}
    for k in pairs(shown[1]) do keys[#keys + 1] = k end
    table.sort(keys)
    assert.same({ "checkpoint", "err-msg", "sink-uri", "source-uri", "state", "task-id", "task-name", "timestamp" }, keys)
    assert.equals("task1", shown[1]["task-name"])
    assert.equals("running", shown[1].state)
    assert.equals("mysql://root:******@127.0.0.1:" .. src.port, shown[1]["source-uri"])
    assert.equals("mysql://root:******@127.0.0.1:" .. sink.port, shown[1]["sink-uri"])
    assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-7%x%x%x%-[89ab]%x%x%x%-%x+$", shown[1]["task-id"])
    assert.not_matches(mdb.PASSWORD, out)

    -- incremental
    src:sql([[INSERT INTO source_db.orders (order_id, customer_id, order_date, amount, status) VALUES
      (6, 106, '2024-10-29 12:00:00', 150.00, 'New');
      DELETE FROM source_db.orders WHERE order_id = 6;
      UPDATE source_db.orders SET status = 'Delivered' WHERE order_id = 4;]])
    full[4][5] = "Delivered"
    eventually(function() return sink_rows(q)[4][5] == "Delivered" end, 30, "incremental sync")
    assert.same(full, (sink_rows(q)))
    eventually(function()
      local _, o = task("show", "--task-name", "task1", "--source-uri", src.uri)
      return cjson.decode(o)[1].checkpoint:find("source_db.orders", 1, true)
    end, 10, "checkpoint in task show")

    -- pause; rows inserted while paused do not arrive
    rc, _, err = task("pause", "--task-name", "task1", "--source-uri", src.uri)
    assert.equals(0, rc, err)
    rc, out = task("show", "--task-name", "task1", "--source-uri", src.uri)
    assert.equals("stopped", cjson.decode(out)[1].state)
    src:sql([[INSERT INTO source_db.orders (order_id, customer_id, order_date, amount, status) VALUES
      (11, 111, '2024-06-15 08:30:00', 250.75, 'Processing');
      INSERT INTO source_db.orders (order_id, customer_id, order_date, amount, status) VALUES
      (12, 112, '2024-07-22 15:45:00', 399.99, 'Shipped');
      INSERT INTO source_db.orders (order_id, customer_id, order_date, amount, status) VALUES
      (13, 113, '2024-08-30 10:20:00', 599.99, 'Delivered');]])
    -- nothing can apply them: the paused task has no worker process
    assert.equals("", (io.popen("pgrep -f 'task-worke[r] " .. cjson.decode(out)[1]["task-id"] .. "'"):read("*a")))
    assert.equals(5, #sink_rows(q))

    -- resume: the rows written while paused arrive
    rc, _, err = task("resume", "--task-name", "task1", "--source-uri", src.uri)
    assert.equals(0, rc, err)
    full[6] = { "11", "111", "2024-06-15 08:30:00", "250.75", "Processing" }
    full[7] = { "12", "112", "2024-07-22 15:45:00", "399.99", "Shipped" }
    full[8] = { "13", "113", "2024-08-30 10:20:00", "599.99", "Delivered" }
    eventually(function() return #sink_rows(q) == 8 end, 30, "resume catch-up")
    assert.same(full, (sink_rows(q)))
    rc, out = task("show", "--task-name", "task1", "--source-uri", src.uri)
    assert.equals("running", cjson.decode(out)[1].state)
    assert.equals("", cjson.decode(out)[1]["err-msg"])
  end)

  it("seed 001: MatrixOne-to-MatrixOne walkthrough (user_activities, matrixone dialect)", function()
    src:sql([[CREATE DATABASE production_db;
      CREATE TABLE production_db.user_activities (
          activity_id INT PRIMARY KEY,
          user_id INT,
          activity_type VARCHAR(50),
          timestamp DATETIME,
          device VARCHAR(20)
      );
      INSERT INTO production_db.user_activities VALUES
          (1, 1001, 'login', '2024-01-01 09:00:00', 'mobile'),
          (2, 1002, 'like', '2024-01-01 10:15:00', 'desktop'),
          (3, 1003, 'comment', '2024-01-02 14:30:00', 'mobile');]])
    sink:sql("CREATE DATABASE IF NOT EXISTS analytics_db")
    local rc, _, err = task("create",
      "--task-name", "activity_sync",
      "--source-uri", src.uri,
      "--sink-type", "matrixone",
      "--sink-uri", sink.uri,
      "--level", "table",
      "--tables", "production_db.user_activities:analytics_db.analytics_activities")
    assert.equals(0, rc, err)
    local q = "SELECT * FROM analytics_db.analytics_activities ORDER BY activity_id"
    eventually(function() return #sink_rows(q) == 3 end, 30, "full copy")
    assert.same({
      { "1", "1001", "login", "2024-01-01 09:00:00", "mobile" },
      { "2", "1002", "like", "2024-01-01 10:15:00", "desktop" },
      { "3", "1003", "comment", "2024-01-02 14:30:00", "mobile" },
    }, (sink_rows(q)))
    src:sql([[INSERT INTO production_db.user_activities VALUES
        (4, 1004, 'share', '2024-01-03 16:45:00', 'desktop');
      UPDATE production_db.user_activities SET activity_type = 'logout' WHERE activity_id = 1;]])
    local want = {
      { "1", "1001", "logout", "2024-01-01 09:00:00", "mobile" },
      { "2", "1002", "like", "2024-01-01 10:15:00", "desktop" },
      { "3", "1003", "comment", "2024-01-02 14:30:00", "mobile" },
      { "4", "1004", "share", "2024-01-03 16:45:00", "desktop" },
    }
    eventually(function() return #sink_rows(q) == 4 and sink_rows(q)[1][3] == "logout" end, 30, "incremental")
    assert.same(want, (sink_rows(q)))
    rc, _, err = task("pause", "--task-name", "activity_sync", "--source-uri", src.uri)
    assert.equals(0, rc, err)
    src:sql([[INSERT INTO production_db.user_activities VALUES (5, 1005, 'login', '2024-01-04 08:00:00', 'tablet');
      DELETE FROM production_db.user_activities WHERE activity_id = 2;]])
    -- nothing can apply them: the paused task has no worker process
    local _, shown = task("show", "--task-name", "activity_sync", "--source-uri", src.uri)
    assert.equals("", (io.popen("pgrep -f 'task-worke[r] " .. cjson.decode(shown)[1]["task-id"] .. "'"):read("*a")))
    assert.equals(4, #sink_rows(q))
    rc, _, err = task("resume", "--task-name", "activity_sync", "--source-uri", src.uri)
    assert.equals(0, rc, err)
    table.remove(want, 2)
    want[#want + 1] = { "5", "1005", "login", "2024-01-04 08:00:00", "tablet" }
    eventually(function() return #sink_rows(q) == 4 and sink_rows(q)[4][1] == "5" end, 30, "resume")
    assert.same(want, (sink_rows(q)))
  end)
end)
