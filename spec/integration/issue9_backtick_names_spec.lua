-- Issue 9 defect 5: a backtick in a database or table name (`a``b`) must reach
-- the sink under the same name, through the full copy, the binlog and
-- mergeSchema's DDL (one quoting rule: schema.qi; one reading rule: schema.read_ident).
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local schema = require("mocdc.schema")

mdb.describe("backticks in names (issue 9 defect 5)", function()
  local src, sink, home
  setup(function()
    src = mdb.start({ name = "bt-source", binlog = true })
    sink = mdb.start({ name = "bt-sink" })
    home = cli.tmpdir()
  end)
  teardown(function() os.execute("rm -rf " .. home) end)

  local function run(cp, tables, extra)
    local args = { "run", "pipelines/binlog_to_mysql.lua", "--set", "source_uri=" .. src.uri,
      "--set", "sink_uri=" .. sink.uri, "--set", "checkpoint=" .. cp, "--set", "tables=" .. tables, "--once" }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    return cli.run(args, { env = { MOCDC_HOME = home } })
  end

  it("reads quoted identifiers with doubled backticks", function()
    assert.same({ "a`b", " rest" }, { schema.read_ident("`a``b` rest") })
    assert.same({ "d`b", "a`b", " ADD x INT" }, { schema.read_qname(" `d``b` . `a``b` ADD x INT", "def") })
    assert.same({ "def", "plain", "" }, { schema.read_qname("plain", "def") })
    assert.same({ "d", "t", "" }, { schema.read_qname("d.t", "def") })
    assert.is_nil(schema.read_ident("`unterminated"))
    assert.equals("CREATE TABLE IF NOT EXISTS `x``y`.`p``q` (\n  `id` int\n)",
      schema.sink_ddl("CREATE TABLE `a``b` (\n  `id` int\n)", "x`y", "p`q"))
  end)

  it("copies and streams a table `a``b` in a database `d``b`, and applies mergeSchema DDL to it", function()
    src:sql("DROP DATABASE IF EXISTS `d``b`; CREATE DATABASE `d``b`; " ..
      "CREATE TABLE `d``b`.`a``b` (id INT PRIMARY KEY, `v``w` VARCHAR(10)); " ..
      "INSERT INTO `d``b`.`a``b` VALUES (1, 'one'), (2, 'two')")
    sink:sql("DROP DATABASE IF EXISTS `d``b`; DROP DATABASE IF EXISTS mocdc")
    local cp = home .. "/bt"
    local rc, _, err = run(cp, "d`b.a`b")
    assert.equals(0, rc, err)
    assert.same({ { "a`b" } }, (sink:rows("SELECT table_name FROM information_schema.tables WHERE table_schema = 'd`b'")))
    assert.same({ { "1", "one" }, { "2", "two" } }, (sink:rows("SELECT * FROM `d``b`.`a``b` ORDER BY id")))
    src:sql("INSERT INTO `d``b`.`a``b` VALUES (3, 'three'); UPDATE `d``b`.`a``b` SET `v``w` = 'TWO' WHERE id = 2; " ..
      "DELETE FROM `d``b`.`a``b` WHERE id = 1")
    rc, _, err = run(cp, "d`b.a`b")
    assert.equals(0, rc, err)
    assert.same({ { "2", "TWO" }, { "3", "three" } }, (sink:rows("SELECT * FROM `d``b`.`a``b` ORDER BY id")))
    src:sql("ALTER TABLE `d``b`.`a``b` ADD COLUMN `n``o` INT; INSERT INTO `d``b`.`a``b` VALUES (4, 'four', 44)")
    rc, _, err = run(cp, "d`b.a`b", { "--set", "merge_schema=true" })
    assert.equals(0, rc, err)
    assert.same({ { "2", "TWO", mdb.NULL }, { "3", "three", mdb.NULL }, { "4", "four", "44" } },
      (sink:rows("SELECT * FROM `d``b`.`a``b` ORDER BY id")))
  end)
end)
