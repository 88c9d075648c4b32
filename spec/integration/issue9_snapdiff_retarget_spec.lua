-- Issue 9 defect 1 on the snapshot-diff engine: a stream given a new sink table must copy it in
-- full and then diff it against its own stored state, never against the old target's.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")

mdb.describe("snapshot diff: a stream retargeted to a new sink table (issue 9 defect 1)", function()
  local src, sink, home
  setup(function()
    src = mdb.start({ name = "sr-source" })
    sink = mdb.start({ name = "sr-sink" })
    home = cli.tmpdir()
  end)
  teardown(function() os.execute("rm -rf " .. home) end)

  local function run(tables, cp)
    return cli.run({ "run", "pipelines/snapshot_sync.lua", "--once", "--set", "source_uri=" .. src.uri,
      "--set", "sink_uri=" .. sink.uri, "--set", "tables=" .. tables, "--set", "checkpoint=" .. home .. "/" .. cp },
      { env = { MOCDC_HOME = home } })
  end
  local function rows(s, t) return (s:rows("SELECT * FROM " .. t .. " ORDER BY id")) end

  it("copies the new target in full, then keeps both targets equal to the source", function()
    src:sql("CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, v VARCHAR(20)); " ..
      "INSERT INTO d.t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
    local rc, _, err = run("d.t:d2.t", "cp1")
    assert.equals(0, rc, err)
    assert.same(rows(src, "d.t"), rows(sink, "d2.t"))
    src:sql("INSERT INTO d.t VALUES (4, 'd'); UPDATE d.t SET v = 'B' WHERE id = 2")
    for _, cp in ipairs({ "cp2", "cp1" }) do -- a new checkpoint directory, then the old one again
      rc, _, err = run("d.t:d3.t", cp)
      assert.equals(0, rc, err)
      assert.same(rows(src, "d.t"), rows(sink, "d3.t"))
      src:sql("INSERT INTO d.t VALUES (" .. (cp == "cp2" and 5 or 6) .. ", 'e'); DELETE FROM d.t WHERE id = 1")
      rc, _, err = run("d.t:d3.t", cp)
      assert.equals(0, rc, err)
      assert.same(rows(src, "d.t"), rows(sink, "d3.t"))
    end
    -- and the old target, diffed again, catches up with everything since its last iteration
    rc, _, err = run("d.t:d2.t", "cp1")
    assert.equals(0, rc, err)
    assert.same(rows(src, "d.t"), rows(sink, "d2.t"))
  end)
end)
