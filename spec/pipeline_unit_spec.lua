-- Unit specs of the Lua pipeline layer (no server needed).
local log = require("mocdc.log")
local schema = require("mocdc.schema")
local stream = require("mocdc.pipeline.stream")
local tables = require("mocdc.pipeline.tables")
local pipeline = require("mocdc.pipeline.env")
local errors = require("mocdc.errors")

local function tmpfile(content)
  local p = os.tmpname() .. ".lua"
  local f = assert(io.open(p, "w"))
  f:write(content)
  f:close()
  return p
end

local function raised(fn)
  local ok, e = pcall(fn)
  assert.is_false(ok)
  return errors.message(e)
end

describe("log.mask", function()
  it("masks everything after the first ':' of a URI's user part", function()
    assert.equals("mysql://root:******@127.0.0.1:6001", log.mask("mysql://root:111@127.0.0.1:6001"))
    assert.equals("mysql://acc1:******@127.0.0.1:6001", log.mask("mysql://acc1:admin:111@127.0.0.1:6001"))
    assert.equals("x mysql://acct#user:******@h:1/db y", log.mask("x mysql://acct#user:s3cr3t@h:1/db y"))
    assert.equals("mysql://root@h:1", log.mask("mysql://root@h:1"))
  end)
end)

describe("tables.parse_tables", function()
  it("parses the mo_cdc mapping form", function()
    local r = tables.parse_tables("source_db.orders:analytics_db.orders_backup, db1.t1")
    assert.same({ src_db = "source_db", src_table = "orders", dst_db = "analytics_db", dst_table = "orders_backup",
      entry = "source_db.orders:analytics_db.orders_backup" }, r[1])
    assert.same({ src_db = "db1", src_table = "t1", dst_db = "db1", dst_table = "t1", entry = "db1.t1" }, r[2])
  end)
  it("rejects an entry without a database", function()
    assert.equals("tables: 'orders' is not db.table (expected \"db.t:db2.t2,...\")",
      raised(function() tables.parse_tables("orders") end))
  end)
  it("rejects an invalid regex with the option name", function()
    local msg = raised(function() tables.compile_filters({ tableNamePattern = "a(b" }) end)
    assert.matches("^tableNamePattern: invalid regex 'a%(b'", msg)
  end)
end)

describe("schema", function()
  it("classifies column types", function()
    assert.equals("num", schema.class_of("bigint"))
    assert.equals("num", schema.class_of("DECIMAL"))
    assert.equals("bit", schema.class_of("bit"))
    assert.equals("bin", schema.class_of("varbinary"))
    assert.equals("bin", schema.class_of("longblob"))
    assert.equals("str", schema.class_of("json"))
    assert.equals("str", schema.class_of("timestamp"))
  end)
  it("renames the table in the sink DDL and strips foreign keys", function()
    local ddl = "CREATE TABLE `orders` (\n  `id` int(11) NOT NULL,\n  `c` int(11) DEFAULT NULL,\n" ..
      "  PRIMARY KEY (`id`),\n  CONSTRAINT `fk` FOREIGN KEY (`c`) REFERENCES `cust` (`id`)\n) ENGINE=InnoDB"
    assert.equals("CREATE TABLE IF NOT EXISTS `analytics_db`.`orders_backup` (\n  `id` int(11) NOT NULL,\n" ..
      "  `c` int(11) DEFAULT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB",
      schema.sink_ddl(ddl, "analytics_db", "orders_backup", "mysql"))
    assert.equals("CREATE TABLE IF NOT EXISTS `a`.`b` (\n  `id` int NOT NULL\n)",
      schema.sink_ddl("CREATE TABLE `x` (\n  `id` int NOT NULL\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4", "a", "b", "matrixone"))
  end)
  it("compares columns and names the first difference", function()
    local src = { { name = "id", column_type = "int(11)" }, { name = "status", column_type = "varchar(20)" } }
    assert.is_nil(schema.compare("s.t", src, "d.t", { { name = "id", column_type = "int" },
      { name = "status", column_type = "varchar(20)" } }))
    assert.equals("column 'status' is varchar(20) in s.t but varchar(10) in sink table d.t",
      schema.compare("s.t", src, "d.t", { { name = "id", column_type = "int(11)" }, { name = "status", column_type = "varchar(10)" } }))
    assert.equals("column 'status' of s.t is missing in sink table d.t",
      schema.compare("s.t", src, "d.t", { { name = "id", column_type = "int(11)" } }))
  end)
end)

describe("stream transforms", function()
  it("applies filter, map, rename and drop in order", function()
    local s = stream.new({ kind = "snapshot", opts = {} })
      :filter(function(r) return r.status ~= "Test" end)
      :map(function(r) r.amount = r.amount * 2 return r end)
      :rename({ status = "state" })
      :drop({ "note" })
    local fn = stream.compile(s.transforms)
    assert.is_nil(fn({ status = "Test", amount = 1 }))
    assert.same({ state = "New", amount = 4 }, fn({ status = "New", amount = 2, note = "x" }))
    local cols = stream.output_columns(s.transforms, { { name = "status" }, { name = "amount" }, { name = "note" } })
    assert.same({ { name = "state" }, { name = "amount" } }, cols)
  end)
  it("reports the user's file:line when a transform fails", function()
    local s = stream.new({}):map(function(r) return r.x.y end)
    local ok, e = pcall(stream.compile(s.transforms), {})
    assert.is_false(ok)
    assert.equals("map", e.transform)
    assert.matches("pipeline_unit_spec.lua:%d+", e.where)
    assert.matches("attempt to index", e.msg)
  end)
end)

describe("pipeline.declare", function()
  it("runs the script and registers jobs with --set variables winning over set{}", function()
    local p = tmpfile([[
      set { streamName = "orders", tables = "a.b" }
      local s = load.snapshot { uri = var "source_uri", tables = var "tables" }
      save.append(s:filter(function(r) return true end), "mysql://root:pw@127.0.0.1:1", { idCols = "id" })
    ]])
    local ctx = pipeline.declare(p, { source_uri = "mysql://u:p@h:1", tables = "x.y" })
    assert.equals("orders", ctx.name)
    assert.equals(1, #ctx.jobs)
    assert.equals("x.y", ctx.jobs[1].stream.source.opts.tables)
    assert.equals(1, #ctx.jobs[1].stream.transforms)
    os.remove(p)
  end)
  it("reports a Lua syntax error with file:line", function()
    local p = tmpfile("local x = = 1\n")
    local msg = raised(function() pipeline.declare(p, {}) end)
    assert.matches("%.lua:1: unexpected symbol near '='", msg)
    os.remove(p)
  end)
  it("refuses undeclared globals and missing variables", function()
    local p = tmpfile("x = 1\n")
    assert.matches(":1: assignment to undeclared global 'x' %(use local x = %.%.%.%)", raised(function() pipeline.declare(p, {}) end))
    os.remove(p)
    p = tmpfile("local s = load.snapshot { uri = var 'source_uri' }\n")
    assert.matches(":1: variable 'source_uri' is not set %(pass %-%-set source_uri=%.%.%.%)", raised(function() pipeline.declare(p, {}) end))
    os.remove(p)
  end)
  it("refuses a script that declares no sink", function()
    local p = tmpfile("local s = load.snapshot { uri = 'mysql://a@b:1' }\n")
    assert.matches("declares no save.append", raised(function() pipeline.declare(p, {}) end))
    os.remove(p)
  end)
end)

describe("progress line", function()
  it("shows rows, rows/s and ETA on a terminal and nothing otherwise", function()
    local progress = require("mocdc.progress")
    local buf = {}
    local out = { write = function(_, ...) for _, s in ipairs({ ... }) do buf[#buf + 1] = s end end, flush = function() end }
    local p = progress.new("source_db.orders -> analytics_db.orders_backup", 1000000, { tty = true })
    p.out = out
    p.last = -1
    p:add(250000)
    local line = table.concat(buf)
    assert.matches("source_db.orders %-> analytics_db.orders_backup: 250,000/~1,000,000 rows  [%d,]+ rows/s  ETA %d+s", line)
    local q = progress.new("x", 10, { tty = false })
    buf = {}
    q.out = out
    q:add(5)
    q:finish()
    assert.equals(0, #buf)
  end)
end)

describe("full-copy resume keys", function()
  it("round-trip arbitrary bytes through the watermark's JSON", function()
    local copy = require("mocdc.engine.copy")
    local key = { "\0\255\128'\"", "42" }
    local enc = copy.encode_key(key)
    assert.same({ hex = { "00ff802722", "3432" } }, enc)
    assert.same(key, copy.decode_key(require("cjson").decode(require("cjson").encode(enc))))
  end)
end)

describe("tables.resolve level option", function()
  it("refuses an inconsistent level before touching the server", function()
    local tables = require("mocdc.pipeline.tables")
    local errors = require("mocdc.errors")
    local function msg(o)
      local ok, e = pcall(tables.resolve, nil, o, "src")
      assert.is_false(ok)
      return errors.message(e)
    end
    assert.equals("level 'cluster' must be account, database or table", msg({ level = "cluster" }))
    assert.equals('level = "table" needs tables = "db.t:db2.t2,..."', msg({ level = "table" }))
    assert.equals('level = "database" needs databases = "db1:db2"', msg({ level = "database" }))
  end)
end)
