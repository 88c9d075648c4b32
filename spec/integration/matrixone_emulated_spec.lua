-- Issue 5 step 2: the MatrixOne source's whole flow (load.matrixone) run
-- against MariaDB with spec/helpers/mo_emulator.lua standing in for MatrixOne's
-- snapshots and DATA BRANCH DIFF (system-versioned tables give the time travel).
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local emulator = require("spec.helpers.mo_emulator")
local log = require("mocdc.log")

mdb.describe("MatrixOne source, emulated on MariaDB (issue 5)", function()
  local up, sink, dir
  local mo = require("mocdc.engine.matrixone")
  local snapshot = require("mocdc.source.mysql")
  local stream = require("mocdc.pipeline.stream")
  local orig_open = mo.open
  local snaps, emu_opts, last = {}, nil, nil

  setup(function()
    up = mdb.start({ name = "mo-up" })
    sink = mdb.start({ name = "mo-sink" })
    dir = cli.tmpdir()
    log.level = "warn"
    up:sql("CREATE DATABASE source_db")
    up:sql([[CREATE TABLE source_db.orders (order_id INT PRIMARY KEY, customer_id INT, order_date DATETIME,
        amount DECIMAL(10, 2), status VARCHAR(20)) WITH SYSTEM VERSIONING;
      INSERT INTO source_db.orders VALUES (1, 101, '2024-01-15 14:30:00', 99.99, 'Shipped'),
       (2, 102, '2024-02-10 10:00:00', 149.50, 'Delivered'), (3, 103, '2024-03-05 16:45:00', 75.00, 'Processing'),
       (4, 104, '2024-04-20 09:15:00', 200.00, 'Shipped'), (5, 105, '2024-05-12 14:00:00', 49.99, 'Delivered');]])
    mo.open = function(o)
      local base = snapshot.open(o)
      last = emulator.wrap(base.c, emu_opts)
      base.c = last
      return mo.wrap(last, o, base)
    end
  end)
  teardown(function()
    mo.open = orig_open
    log.level = "info"
    os.execute("rm -rf " .. dir)
  end)

  local PITR = { { "p", "x", "x", "database", "sys", "source_db", "*", "2", "h" } }
  local function run(opts)
    emu_opts = { branch_diff = opts.branch_diff ~= false, pitr = opts.pitr or PITR, snapshots = snaps }
    local so = { uri = up.uri, tables = "source_db.orders:analytics_db.orders_backup", diffChunkRows = 2 }
    for k, v in pairs(opts.src or {}) do so[k] = v end
    local job = { stream = stream.new({ kind = "matrixone", opts = so }), target = sink.uri,
      opts = { duration = 1, checkpointLocation = dir .. "/cp" } }
    local summary = mo.run(job, { name = "mo_test" }, { once = true })
    return summary[1], last.log
  end
  local function same()
    local a = up:rows("SELECT * FROM source_db.orders ORDER BY order_id")
    local b = sink:rows("SELECT * FROM analytics_db.orders_backup ORDER BY order_id")
    assert.same(a, b)
    return #a
  end
  local function live_snapshots()
    local n = 0
    for _ in pairs(snaps) do n = n + 1 end
    return n
  end
  -- each spec starts from the five seed rows, a sink without the table or watermark, no
  -- checkpoint and no snapshot, and makes its first (full) run itself: any order works
  local function fresh()
    up:sql([[DELETE FROM source_db.orders;
      INSERT INTO source_db.orders VALUES (1, 101, '2024-01-15 14:30:00', 99.99, 'Shipped'),
       (2, 102, '2024-02-10 10:00:00', 149.50, 'Delivered'), (3, 103, '2024-03-05 16:45:00', 75.00, 'Processing'),
       (4, 104, '2024-04-20 09:15:00', 200.00, 'Shipped'), (5, 105, '2024-05-12 14:00:00', 49.99, 'Delivered');]])
    sink:sql("DROP DATABASE IF EXISTS analytics_db; DROP DATABASE IF EXISTS mocdc")
    os.execute("rm -rf " .. dir .. "/cp")
    for k in pairs(snaps) do snaps[k] = nil end
  end
  local function has(logl, pat)
    for _, s in ipairs(logl) do if s:find(pat, 1, true) then return true end end
    return false
  end

  it("copies at a snapshot, then applies DATA BRANCH DIFF between snapshots, dropping the old one", function()
    fresh()
    local s, l = run({})
    if os.getenv("EMU_DEBUG") then for _, x in ipairs(l) do print(x) end end
    assert.is_true(s.full)
    assert.equals(5, same())
    assert.is_true(has(l, "SHOW PITR"))
    assert.is_true(has(l, "CREATE SNAPSHOT mocdc_mo_test_"))
    assert.is_true(has(l, "FROM `source_db`.`orders`{SNAPSHOT = 'mocdc_mo_test_"))
    assert.equals(1, live_snapshots())
    up:sql([[INSERT INTO source_db.orders VALUES (6, 106, '2024-06-01 12:00:00', 300.00, 'Processing');
      UPDATE source_db.orders SET status = 'Delivered' WHERE order_id = 3;
      DELETE FROM source_db.orders WHERE order_id = 2;]])
    s, l = run({})
    assert.same({ 1, 1, 1 }, { s.stats.inserts, s.stats.updates, s.stats.deletes })
    assert.is_true(has(l, "DATA BRANCH DIFF `source_db`.`orders`{SNAPSHOT = 'mocdc_mo_test_"))
    assert.equals(5, same())
    assert.equals(1, live_snapshots())
    local wm = sink:rows("SELECT phase, position FROM mocdc.watermark WHERE source_table = 'source_db.orders'")
    assert.equals("mo", wm[1][1])
    assert.matches('"snapshot":"mocdc_mo_test_', wm[1][2])
  end)

  it("falls back to chunk checksums with time travel when DATA BRANCH DIFF is missing", function()
    fresh()
    assert.is_true(run({}).full)
    up:sql("UPDATE source_db.orders SET amount = 1.00 WHERE order_id = 1; INSERT INTO source_db.orders VALUES " ..
      "(7, 107, NULL, NULL, NULL)")
    local s, l = run({ branch_diff = false })
    assert.is_true(has(l, "DATA BRANCH DIFF"))
    assert.is_true(has(l, "FOR SYSTEM_TIME") == false) -- the emulator rewrites, the source sends {SNAPSHOT}
    assert.is_true(has(l, "{SNAPSHOT = 'mocdc_mo_test_"))
    assert.same({ 1, 1, 0 }, { s.stats.inserts, s.stats.updates, s.stats.deletes })
    assert.equals(6, same())
    assert.equals(1, live_snapshots())
  end)

  it("syncs the final state when the old snapshot is gone (outside PITR/GC)", function()
    fresh()
    assert.is_true(run({}).full)
    for k in pairs(snaps) do snaps[k] = nil end
    up:sql("DELETE FROM source_db.orders WHERE order_id = 5; UPDATE source_db.orders SET customer_id = 0 WHERE order_id = 4")
    local s = run({})
    assert.same({ 0, 1, 1 }, { s.stats.inserts, s.stats.updates, s.stats.deletes })
    assert.equals(4, same())
  end)

  it("refuses a source without PITR, saying how to create one", function()
    fresh()
    local ok, e = pcall(run, { pitr = {} })
    assert.is_false(ok)
    assert.matches("has no PITR of at least 2 h covering source_db.orders", require("mocdc.errors").message(e), 1, true)
    assert.matches("CREATE PITR mocdc_pitr FOR DATABASE `source_db` RANGE 2 'h'", require("mocdc.errors").message(e), 1, true)
  end)
end)
