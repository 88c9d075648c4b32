-- Issue 9 defect 2: generated columns (STORED and VIRTUAL) are never written:
-- the sink computes them. Full copy, binlog insert / update / delete (keyed and
-- keyless tables), snapshot diff; the schema check compares them.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local util = require("mocdc.util.lib")

local DDL = [[
CREATE TABLE g.t (id INT PRIMARY KEY, a INT, b VARCHAR(10),
  s INT AS (a * 2) STORED, v VARCHAR(20) AS (CONCAT(b, '-', a)) VIRTUAL, c INT);
CREATE TABLE g.nk (a INT, s INT AS (a + 100) STORED, v INT AS (a * 3) VIRTUAL, b VARCHAR(10));
INSERT INTO g.t (id, a, b, c) VALUES (1, 1, 'one', 10), (2, 2, 'two', 20);
INSERT INTO g.nk (a, b) VALUES (1, 'x'), (1, 'x'), (2, 'y');
]]

mdb.describe("generated columns (issue 9 defect 2)", function()
  local src, sink, home
  setup(function()
    src = mdb.start({ name = "gc-source", binlog = true })
    sink = mdb.start({ name = "gc-sink" })
    home = cli.tmpdir()
  end)
  teardown(function() os.execute("rm -rf " .. home) end)

  local function fresh(sink_ddl)
    src:sql("DROP DATABASE IF EXISTS g; CREATE DATABASE g; " .. DDL)
    sink:sql("DROP DATABASE IF EXISTS g; DROP DATABASE IF EXISTS mocdc")
    if sink_ddl then sink:sql("CREATE DATABASE g; " .. sink_ddl) end
  end

  local function run(pipeline, cp, tables, extra)
    local args = { "run", pipeline, "--set", "source_uri=" .. src.uri, "--set", "sink_uri=" .. sink.uri,
      "--set", "checkpoint=" .. home .. "/" .. cp, "--set", "tables=" .. tables, "--once" }
    for _, a in ipairs(extra or {}) do args[#args + 1] = a end
    return cli.run(args, { env = { MOCDC_HOME = home } })
  end

  local function same(tbl, order)
    local a = src:rows("SELECT * FROM g." .. tbl .. " ORDER BY " .. order)
    assert.same(a, (sink:rows("SELECT * FROM g." .. tbl .. " ORDER BY " .. order)))
    return a
  end

  local function same_cols(tbl, cols, order)
    local a = src:rows("SELECT " .. cols .. " FROM g." .. tbl .. " ORDER BY " .. order)
    assert.same(a, (sink:rows("SELECT " .. cols .. " FROM g." .. tbl .. " ORDER BY " .. order)))
    return a
  end

  local CHANGES = [[
    INSERT INTO g.t (id, a, b, c) VALUES (3, 3, 'three', 30);
    UPDATE g.t SET a = 20, b = 'TWO' WHERE id = 2;
    UPDATE g.t SET c = 11 WHERE id = 1;
    DELETE FROM g.t WHERE id = 3;
    INSERT INTO g.t (id, a, b, c) VALUES (4, 4, 'four', 40);
    INSERT INTO g.nk (a, b) VALUES (3, 'z');
    UPDATE g.nk SET b = 'w' WHERE a = 2;
    DELETE FROM g.nk WHERE a = 1 LIMIT 1;
  ]]

  it("binlog: full copy, then inserts, updates and deletes of keyed and keyless tables", function()
    fresh()
    local rc, _, err = run("pipelines/binlog_to_mysql.lua", "bl", "g.t,g.nk")
    assert.equals(0, rc, err)
    -- the sink table computes its generated columns (created from the source DDL)
    assert.same({ { "s", "STORED GENERATED" }, { "v", "VIRTUAL GENERATED" } }, (sink:rows(
      "SELECT column_name, extra FROM information_schema.columns WHERE table_schema = 'g' AND table_name = 't' " ..
      "AND extra LIKE '%GENERATED' ORDER BY column_name")))
    same("t", "id")
    same("nk", "a, b")
    src:sql(CHANGES)
    rc, _, err = run("pipelines/binlog_to_mysql.lua", "bl", "g.t,g.nk")
    assert.equals(0, rc, err)
    assert.same({ { "1", "1", "one", "2", "one-1", "11" }, { "2", "20", "TWO", "40", "TWO-20", "20" },
      { "4", "4", "four", "8", "four-4", "40" } }, same("t", "id"))
    assert.equals(3, #same("nk", "a, b"))
  end)

  it("binlog with mergeSchema: a generated column added by ALTER while running is not written either", function()
    fresh()
    local logf = home .. "/ms.log"
    local pid = cli.spawn({ "run", "pipelines/binlog_to_mysql.lua", "--set", "source_uri=" .. src.uri,
      "--set", "sink_uri=" .. sink.uri, "--set", "checkpoint=" .. home .. "/ms", "--set", "tables=g.t",
      "--set", "merge_schema=true" }, logf, { env = { MOCDC_HOME = home } })
    finally(function() if cli.alive(pid) then util.kill(pid, 9) end end)
    cli.eventually(function() return sink:rows("SELECT COUNT(*) FROM g.t")[1][1] == "2" end, 30, "the full copy")
    src:sql("ALTER TABLE g.t ADD COLUMN w INT AS (c + 1) STORED; INSERT INTO g.t (id, a, b, c) VALUES (5, 5, 'five', 50); " ..
      "UPDATE g.t SET c = 12 WHERE id = 1")
    cli.eventually(function() return sink:rows("SELECT c FROM g.t WHERE id = 1")[1][1] == "12" end, 30, "the update")
    assert.same({ { "1", "13" }, { "2", "21" }, { "5", "51" } }, same_cols("t", "id, w", "id"))
    util.kill(pid, 15)
    assert.is_true(cli.wait(pid, 30))
    local f = io.open(logf)
    local log = f:read("*a")
    f:close()
    assert.not_matches(" ERROR ", log) -- no table stopped (the 1906 of a generated column written)
  end)

  it("snapshot diff: copies and diffs a table with generated columns", function()
    fresh()
    local rc, _, err = run("pipelines/snapshot_sync.lua", "sd", "g.t,g.nk", { "--set", "interval=0" })
    assert.equals(0, rc, err)
    same("t", "id")
    src:sql(CHANGES)
    rc, _, err = run("pipelines/snapshot_sync.lua", "sd", "g.t,g.nk", { "--set", "interval=0" })
    assert.equals(0, rc, err)
    same("t", "id")
    same("nk", "a, b")
  end)

  describe("the schema check compares generated columns", function()
    local function mismatch(sink_ddl, why)
      fresh(sink_ddl)
      local rc, _, err = run("pipelines/binlog_to_mysql.lua", "mm", "g.t")
      assert.equals(2, rc, err) -- a configuration error (issue9_exit_codes_spec.lua)
      assert.is_true(cli.one_line(err), err)
      assert.equals("mocdc: error: schema mismatch: " .. why .. "; make the sink table match the source, " ..
        "or drop it and mocdc will create it\n", err:match("[^\n]*\n$"))
    end
    it("a generated column that is a plain column in the sink", function()
      mismatch("CREATE TABLE g.t (id INT PRIMARY KEY, a INT, b VARCHAR(10), s INT, " ..
        "v VARCHAR(20) AS (CONCAT(b, '-', a)) VIRTUAL, c INT)",
        "column 's' of g.t is generated (STORED, a * 2) but not in sink table g.t")
    end)
    it("a plain column that is generated in the sink", function()
      mismatch("CREATE TABLE g.t (id INT PRIMARY KEY, a INT, b VARCHAR(10), s INT AS (a * 2) STORED, " ..
        "v VARCHAR(20) AS (CONCAT(b, '-', a)) VIRTUAL, c INT AS (a + 1) VIRTUAL)",
        "column 'c' is generated (VIRTUAL, a + 1) in sink table g.t but not in g.t")
    end)
    it("another expression or kind", function()
      mismatch("CREATE TABLE g.t (id INT PRIMARY KEY, a INT, b VARCHAR(10), s INT AS (a * 3) STORED, " ..
        "v VARCHAR(20) AS (CONCAT(b, '-', a)) VIRTUAL, c INT)",
        "column 's' is generated as (STORED, a * 2) in g.t but as (STORED, a * 3) in sink table g.t")
      mismatch("CREATE TABLE g.t (id INT PRIMARY KEY, a INT, b VARCHAR(10), s INT AS (a * 2) VIRTUAL, " ..
        "v VARCHAR(20) AS (CONCAT(b, '-', a)) VIRTUAL, c INT)",
        "column 's' is generated as (STORED, a * 2) in g.t but as (VIRTUAL, a * 2) in sink table g.t")
    end)
    it("the sink lacks a generated column", function()
      mismatch("CREATE TABLE g.t (id INT PRIMARY KEY, a INT, b VARCHAR(10), s INT AS (a * 2) STORED, c INT)",
        "column 'v' of g.t is missing in sink table g.t")
    end)
  end)
end)
