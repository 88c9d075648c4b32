-- Issue 10: the MatrixOne source honours noFull (it never read it): the rows
-- already in the source are not copied, later changes arrive (DATA BRANCH DIFF
-- from the first snapshot). Run against MariaDB with spec/helpers/mo_emulator.lua.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local emulator = require("spec.helpers.mo_emulator")
local log = require("mocdc.log")

mdb.describe("MatrixOne source noFull (issue 10)", function()
  local up, sink, dir
  local mo = require("mocdc.engine.matrixone")
  local runner = require("mocdc.pipeline.job")
  local snapshot = require("mocdc.source.mysql")
  local stream = require("mocdc.pipeline.stream")
  local orig_open = mo.open
  local snaps = {}

  setup(function()
    up = mdb.start({ name = "mo-nofull-up" })
    sink = mdb.start({ name = "mo-nofull-sink" })
    dir = cli.tmpdir()
    log.level = "warn"
    up:sql([[CREATE DATABASE source_db;
      CREATE TABLE source_db.orders (order_id INT PRIMARY KEY, status VARCHAR(20)) WITH SYSTEM VERSIONING;
      INSERT INTO source_db.orders VALUES (1, 'a'), (2, 'b'), (3, 'c'), (4, 'd'), (5, 'e');]])
    mo.open = function(o)
      local base = snapshot.open(o)
      local c = emulator.wrap(base.c, { branch_diff = true, snapshots = snaps,
        pitr = { { "p", "x", "x", "database", "sys", "source_db", "*", "2", "h" } } })
      base.c = c
      return mo.wrap(c, o, base)
    end
  end)
  teardown(function()
    mo.open = orig_open
    log.level = "info"
    os.execute("rm -rf " .. dir)
  end)

  local function run()
    local job = { stream = stream.new({ kind = "matrixone", opts = { uri = up.uri, noFull = "true",
      tables = "source_db.orders:analytics_db.orders_backup" } }), target = sink.uri,
      opts = { duration = 1, checkpointLocation = dir .. "/cp" } }
    runner.check_options(job) -- accepted by mocdc run's option check
    return mo.run(job, { name = "mo_nofull" }, { once = true })[1]
  end
  local function sink_rows()
    return sink:rows("SELECT order_id, status FROM analytics_db.orders_backup ORDER BY order_id")
  end

  it("copies none of the existing rows, then applies the changes made after the first snapshot", function()
    local s = run()
    assert.equals(0, s.rows)
    assert.same({}, sink_rows())
    local wm = sink:rows("SELECT phase FROM mocdc.watermark WHERE source_table = 'source_db.orders'")
    assert.same({ { "mo" } }, wm)
    up:sql([[INSERT INTO source_db.orders VALUES (6, 'f');
      UPDATE source_db.orders SET status = 'x' WHERE order_id = 3;
      DELETE FROM source_db.orders WHERE order_id = 2;]])
    s = run()
    assert.same({ 1, 1, 1 }, { s.stats.inserts, s.stats.updates, s.stats.deletes })
    assert.same({ { "3", "x" }, { "6", "f" } }, sink_rows())
  end)
end)
