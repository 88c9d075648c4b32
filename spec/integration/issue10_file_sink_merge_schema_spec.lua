-- Issue 10: mergeSchema = "true" with the file sink (seed 004's binlogRate
-- save): source DDL on a synced table becomes a schema-change record in the
-- table's changes.jsonl and the pipeline goes on (it crashed: "attempt to call
-- method 'exec' (a nil value)").
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local cjson = require("cjson")

mdb.describe("file sink with mergeSchema (issue 10)", function()
  local src, home
  setup(function()
    src = mdb.start({ name = "fm-source", binlog = true })
    home = cli.tmpdir()
  end)
  teardown(function() os.execute("rm -rf " .. home) end)

  local function records(path)
    local out = {}
    for line in io.lines(path) do out[#out + 1] = cjson.decode(line) end
    return out
  end

  it("runs seed 004's save options with mergeSchema: DDL is a record, the changes after it follow", function()
    src:sql("DROP DATABASE IF EXISTS mlsql_console; CREATE DATABASE mlsql_console; " ..
      "CREATE TABLE mlsql_console.script_file (id INT PRIMARY KEY, name VARCHAR(20)); " ..
      "INSERT INTO mlsql_console.script_file VALUES (1, 'a')")
    local function run()
      return cli.run({ "run", "pipelines/binlog_to_files.lua", "--set", "host=127.0.0.1", "--set", "port=" .. src.port,
        "--set", "userName=root", "--set", "password=" .. mdb.PASSWORD, "--set", "path=" .. home .. "/out/{db}/{table}",
        "--set", "checkpointLocation=" .. home .. "/cpl", "--set", "mergeSchema=true", "--once" },
        { env = { MOCDC_HOME = home } })
    end
    local rc, _, err = run()
    assert.equals(0, rc, err)
    src:sql("ALTER TABLE mlsql_console.script_file ADD COLUMN note VARCHAR(10); " ..
      "INSERT INTO mlsql_console.script_file VALUES (2, 'b', 'new')")
    rc, _, err = run()
    assert.equals(0, rc, err)
    local recs = records(home .. "/out/mlsql_console/script_file/changes.jsonl")
    assert.equals(3, #recs)
    assert.is_true(recs[1].snapshot)
    local ddl, ins = recs[2], recs[3]
    assert.matches("^mysql%-bin%.%d+$", ddl.pos.file)
    assert.is_number(ddl.ts)
    ddl.pos, ddl.ts = nil, nil
    assert.same({ op = "ddl", db = "mlsql_console", table = "script_file", verb = "ALTER",
      sql = "ALTER TABLE mlsql_console.script_file ADD COLUMN note VARCHAR(10)" }, ddl)
    assert.equals("insert", ins.op)
    assert.same({ id = "2", name = "b", note = "new" }, ins.after)
    -- the pipeline goes on: the next change arrives on the next run
    src:sql("UPDATE mlsql_console.script_file SET note = 'x' WHERE id = 1")
    rc, _, err = run()
    assert.equals(0, rc, err)
    recs = records(home .. "/out/mlsql_console/script_file/changes.jsonl")
    assert.equals(4, #recs)
    assert.same({ id = "1", name = "a", note = "x" }, recs[4].after)
  end)
end)
