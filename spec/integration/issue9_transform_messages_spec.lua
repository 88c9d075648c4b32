-- Issue 9 defect 11: a transform putting a table into a column names the row by
-- its source key and the column, and says what a transform may return; a row too
-- long for maxSqlLength names the option to raise.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")

mdb.describe("transform and max-sql-length messages (issue 9 defect 11)", function()
  local src, sink, home, script
  setup(function()
    src = mdb.start({ name = "tm-source", binlog = true })
    sink = mdb.start({ name = "tm-sink" })
    home = cli.tmpdir()
    script = home .. "/bad_map.lua"
    local f = assert(io.open(script, "w"))
    f:write([[
local bad_id, bad_col = var("bad_id", "none"), var("bad_col", "v")
local s = load.binlog { uri = var("source_uri"), tables = "tm.t" }
save.append(s:map(function(r)
  if r.id == bad_id then r[bad_col] = { "not", "a", "value" } end
  return r
end), var("sink_uri"), { checkpointLocation = var("checkpoint"), maxSqlLength = vars.max_sql })
]])
    f:close()
  end)
  teardown(function() os.execute("rm -rf " .. home) end)

  local function fresh()
    src:sql("DROP DATABASE IF EXISTS tm; CREATE DATABASE tm; CREATE TABLE tm.t (id INT PRIMARY KEY, v TEXT); " ..
      "INSERT INTO tm.t VALUES (1, 'a'), (2, 'b')")
    sink:sql("DROP DATABASE IF EXISTS tm; DROP DATABASE IF EXISTS mocdc")
  end

  local function run(cp, extra)
    local args = { "run", script, "--set", "source_uri=" .. src.uri, "--set", "sink_uri=" .. sink.uri,
      "--set", "checkpoint=" .. home .. "/" .. cp, "--once" }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    return cli.run(args, { env = { MOCDC_HOME = home } })
  end

  local function last_line(err)
    assert.is_true(cli.one_line(err), err)
    return err:match("([^\n]*)\n$")
  end

  it("full copy: names the source key and the column, and what a transform must return", function()
    fresh()
    local rc, _, err = run("copy", { "--set", "bad_id=2" })
    assert.equals(1, rc, err)
    assert.equals("mocdc: error: transform output for tm.t row (id=2) does not fit sink table tm.t: " ..
      "column 'v' holds a table; a transform must set columns to strings, numbers or nil", last_line(err))
    -- a table put into the key column: the key shown is the source's
    rc, _, err = run("copy2", { "--set", "bad_id=1", "--set", "bad_col=id" })
    assert.equals(1, rc, err)
    assert.equals("mocdc: error: transform output for tm.t row (id=1) does not fit sink table tm.t: " ..
      "column 'id' holds a table; a transform must set columns to strings, numbers or nil", last_line(err))
  end)

  it("binlog: names the change, its source key and the column", function()
    fresh()
    local rc, _, err = run("binlog", { "--set", "bad_id=3" })
    assert.equals(0, rc, err)
    src:sql("INSERT INTO tm.t VALUES (3, 'c')")
    rc, _, err = run("binlog", { "--set", "bad_id=3" })
    assert.equals(1, rc, err)
    assert.equals("mocdc: error: transform output for tm.t insert (id=3) does not fit sink table tm.t: " ..
      "column 'v' holds a table; a transform must set columns to strings, numbers or nil", last_line(err))
  end)

  it("a row longer than maxSqlLength names the options to raise", function()
    fresh()
    local rc, _, err = run("long", { "--set", "max_sql=1024" })
    assert.equals(0, rc, err)
    src:sql("INSERT INTO tm.t VALUES (4, REPEAT('x', 2000))")
    rc, _, err = run("long", { "--set", "max_sql=1024" })
    assert.equals(1, rc, err)
    assert.equals("mocdc: error: sink tm.t: row with key (id=4) needs 2046 bytes, more than max-sql-length 1024; " ..
      "raise maxSqlLength (save option; --max-sql-length for tasks) above that, and the sink's " ..
      "max_allowed_packet (now " .. sink:rows("SELECT @@max_allowed_packet")[1][1] .. ") if it is smaller",
      last_line(err))
  end)
end)
