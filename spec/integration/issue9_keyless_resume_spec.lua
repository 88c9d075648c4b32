-- Issue 9 (nothing invented): a binlog pipeline killed during the full copy of a table without a key
-- starts that copy again from a new snapshot; it must then stream from that snapshot's position. It
-- streamed from the first snapshot's, so the rows inserted between the two snapshots arrived twice
-- (once in the copy, once from the binlog).
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local util = require("mocdc.util.lib")

mdb.describe("binlog pipeline: a keyless table's copy restarted after kill -9 (issue 9)", function()
  local src, sink, home
  setup(function()
    src = mdb.start({ name = "kr-source", binlog = true })
    sink = mdb.start({ name = "kr-sink" })
    home = cli.tmpdir()
  end)
  teardown(function() os.execute("rm -rf " .. home) end)

  it("streams from the new snapshot's position: the rows inserted in between arrive once", function()
    local ROWS = 300000
    src:sql("DROP DATABASE IF EXISTS d; CREATE DATABASE d; CREATE TABLE d.nk (a INT, b VARCHAR(40)); USE d; " ..
      "INSERT INTO d.nk SELECT seq % 1000, CONCAT('row-', seq % 977) FROM seq_1_to_" .. ROWS)
    local script = home .. "/nk.lua"
    local f = assert(io.open(script, "w"))
    f:write('save.append(load.binlog { uri = var "source_uri", tables = "d.nk:d2.nk", chunkSize = 1000 }, ' ..
      'var "sink_uri", { checkpointLocation = var "cp" })\n')
    f:close()
    local args = { "run", script, "--set", "source_uri=" .. src.uri, "--set", "sink_uri=" .. sink.uri,
      "--set", "cp=" .. home .. "/cp" }
    local function sink_count()
      return tonumber(sink:rows("SELECT COUNT(*) FROM d2.nk")[1][1])
    end
    -- killed once it committed a chunk, before the copy is done
    local pid = cli.spawn(args, home .. "/run1.log", { env = { MOCDC_HOME = home } })
    local ok, err = pcall(cli.eventually, function() return sink_count() > 0 end, 60, "the first chunk")
    util.kill(pid, 9)
    assert(cli.wait(pid, 10), "mocdc still running after SIGKILL")
    assert(ok, err)
    local n = sink_count()
    assert.is_true(n > 0 and n < ROWS, string.format("the kill landed mid-copy: the sink had %d of %d rows", n, ROWS))

    -- rows that the next run's snapshot holds and the binlog since the first snapshot holds too
    src:sql("INSERT INTO d.nk VALUES (7, 'in between'), (7, 'in between'), (8, 'in between')", "d")
    args[#args + 1] = "--once"
    local rc, _, err2 = cli.run(args, { env = { MOCDC_HOME = home } })
    assert.equals(0, rc, err2)
    local q = "SELECT COUNT(*), SUM(CRC32(CONCAT_WS('#', a, b))) FROM "
    assert.same(src:rows(q .. "d.nk"), sink:rows(q .. "d2.nk"))
  end)
end)
