-- Issue 9, defect 7: configuration errors (a bad URI, a bad regex, a missing
-- table) exit 2, runtime errors (a server that cannot be reached) exit 1, for
-- `mocdc run` and `mocdc task create`; each is one line on stderr.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")

local EXPECTED = " (expected mysql://user:******@host:port[/database])"
local COLON = "a ':' in the password must be written %3A (a MatrixOne login is acc#user[#role]:password)"

mdb.describe("issue 9: exit codes of configuration and runtime errors", function()
  local src, sink, home, closed_port
  setup(function()
    src = mdb.start({ name = "exit-source", binlog = true })
    sink = mdb.start({ name = "exit-sink" })
    home = cli.tmpdir()
    src:sql("CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY); INSERT INTO d.t VALUES (1);")
    -- a port nobody listens on: a stopped server's
    local gone = mdb.start({ name = "exit-gone" })
    closed_port = gone.port
    gone:stop()
  end)
  teardown(function() os.execute("rm -rf " .. cli.q(home)) end)

  local function run(pipeline, sets)
    local args = { "run", cli.root .. "/pipelines/" .. pipeline, "--once" }
    for _, kv in ipairs(sets) do
      args[#args + 1] = "--set"
      args[#args + 1] = kv
    end
    return cli.run(args, { env = { MOCDC_HOME = home } })
  end

  local function expect(want_rc, want_line, rc, out, err)
    assert.are.equal("", out)
    assert.are.equal("mocdc: error: " .. want_line .. "\n", err:match("mocdc: error: [^\n]*\n$"))
    assert.is_true(cli.one_line(err), err)
    assert.are.equal(want_rc, rc, err)
  end

  describe("mocdc run", function()
    it("exits 2 on a bad source or sink URI", function()
      expect(2, "invalid source URI 'mysql://root:******@127.0.0.1:abc': port 'abc' is not a number" .. EXPECTED,
        run("full_copy.lua", { "source_uri=mysql://root:x@127.0.0.1:abc", "sink_uri=" .. sink.uri, "tables=d.t" }))
      expect(2, "invalid source URI 'mysql://root:******@127.0.0.1:1': " .. COLON,
        run("full_copy.lua", { "source_uri=mysql://root:Secr:etPart@127.0.0.1:1", "sink_uri=" .. sink.uri,
          "tables=d.t" }))
      expect(2, "invalid sink URI 'mysql://root:******@:3306': no host after '@'" .. EXPECTED,
        run("full_copy.lua", { "source_uri=" .. src.uri, "sink_uri=mysql://root:x@:3306", "tables=d.t" }))
    end)
    it("exits 2 on a bad regex", function()
      expect(2, "databaseNamePattern: invalid regex '(': missing closing parenthesis at offset 1",
        run("binlog_to_mysql.lua", { "source_uri=" .. src.uri, "sink_uri=" .. sink.uri,
          "databaseNamePattern=(", "checkpoint=" .. home .. "/cp-re" }))
    end)
    it("exits 2 on a missing table or database", function()
      expect(2, string.format("source table d.nope does not exist on root@127.0.0.1:%d (check tables = \"d.nope\")",
        src.port), run("full_copy.lua", { "source_uri=" .. src.uri, "sink_uri=" .. sink.uri, "tables=d.nope" }))
      expect(2, string.format("source table nodb.t does not exist on root@127.0.0.1:%d (check tables = \"nodb.t\")",
        src.port), run("full_copy.lua", { "source_uri=" .. src.uri, "sink_uri=" .. sink.uri, "tables=nodb.t" }))
    end)
    it("exits 2 on a sink table that differs, an idCols naming no column, a source without a row binlog, " ..
      "a bad maxSqlLength", function()
      sink:sql("DROP DATABASE IF EXISTS sd; CREATE DATABASE sd; CREATE TABLE sd.t (id BIGINT PRIMARY KEY)")
      expect(2, "schema mismatch: column 'id' is int(11) in d.t but bigint(20) in sink table sd.t; make the sink " ..
        "table match the source, or drop it and mocdc will create it",
        run("full_copy.lua", { "source_uri=" .. src.uri, "sink_uri=" .. sink.uri, "tables=d.t:sd.t" }))
      src:sql("CREATE TABLE IF NOT EXISTS d.nk (a INT, b INT)")
      expect(2, "key column 'nope' is not a column of d.nk (check idCols)",
        run("binlog_to_mysql.lua", { "source_uri=" .. src.uri, "sink_uri=" .. sink.uri, "tables=d.nk:sd.nk",
          "idCols=nope", "checkpoint=" .. home .. "/cp-id" }))
      expect(2, string.format("source root@127.0.0.1:%d has log_bin=OFF; the binlog source needs log_bin=ON and " ..
        "binlog_format=ROW (add log_bin and binlog_format=ROW to my.cnf and restart), or use load.snapshot", sink.port),
        run("binlog_to_mysql.lua", { "source_uri=" .. sink.uri, "sink_uri=" .. sink.uri, "tables=sd.t:sd2.t",
          "checkpoint=" .. home .. "/cp-nolog" }))
      local p = home .. "/msl.lua"
      local f = assert(io.open(p, "w"))
      f:write('save.append(load.snapshot { uri = var "source_uri", tables = "d.t:sd3.t" }, var "sink_uri", ' ..
        '{ maxSqlLength = var "msl" })\n')
      f:close()
      local rc, out, err = cli.run({ "run", p, "--once", "--set", "source_uri=" .. src.uri, "--set",
        "sink_uri=" .. sink.uri, "--set", "msl=12" }, { env = { MOCDC_HOME = home } })
      expect(2, "option maxSqlLength = '12' must be a number >= 1024", rc, out, err)
    end)
    it("exits 1 when a server cannot be reached", function()
      expect(1, string.format("cannot connect to source root@127.0.0.1:%d: Can't connect to server on '127.0.0.1' " ..
        "(111 \"Connection refused\")", closed_port),
        run("full_copy.lua", { "source_uri=mysql://root:x@127.0.0.1:" .. closed_port, "sink_uri=" .. sink.uri,
          "tables=d.t" }))
    end)
  end)

  describe("mocdc task create", function()
    local n = 0
    local function create(source_uri, tables, extra)
      n = n + 1
      local args = { "task", "create", "--task-name", "t" .. n, "--source-uri", source_uri, "--sink-uri", sink.uri,
        "--level", "table", "--tables", tables }
      for _, a in ipairs(extra or {}) do args[#args + 1] = a end
      return cli.run(args, { env = { MOCDC_HOME = home } })
    end
    it("exits 2 on a bad URI, a bad regex or a missing table", function()
      expect(2, "invalid URI 'mysql://root:******@127.0.0.1:abc': port 'abc' is not a number" .. EXPECTED,
        create("mysql://root:x@127.0.0.1:abc", "d.t"))
      expect(2, "invalid URI 'mysql://root:******@127.0.0.1:1': " .. COLON, create("mysql://root:Se:cret@127.0.0.1:1", "d.t"))
      expect(2, "--exclude: invalid regex '(': missing closing parenthesis at offset 1",
        create(src.uri, "d.t", { "--exclude", "(" }))
      expect(2, string.format("source table d.nope does not exist on root@127.0.0.1:%d (check tables = \"d.nope\")",
        src.port), create(src.uri, "d.nope"))
    end)
    it("exits 2 on --no-full against a source without a row binlog", function()
      sink:sql("CREATE DATABASE IF NOT EXISTS sd; CREATE TABLE IF NOT EXISTS sd.t (id BIGINT PRIMARY KEY)")
      n = n + 1
      local rc, out, err = cli.run({ "task", "create", "--task-name", "t" .. n, "--source-uri", sink.uri,
        "--sink-uri", src.uri, "--level", "table", "--tables", "sd.t:sd4.t", "--no-full" },
        { env = { MOCDC_HOME = home } })
      expect(2, string.format("source root@127.0.0.1:%d has no row binlog (log_bin=ON and binlog_format=ROW are " ..
        "needed): --no-full, --start-ts and --end-ts need one", sink.port), rc, out, err)
    end)
    it("exits 1 when the source cannot be reached", function()
      expect(1, string.format("cannot connect to source root@127.0.0.1:%d: Can't connect to server on '127.0.0.1' " ..
        "(111 \"Connection refused\")", closed_port), create("mysql://root:x@127.0.0.1:" .. closed_port, "d.t"))
    end)
  end)
end)
