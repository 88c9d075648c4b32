-- Issue 9, defect 1: a watermark belongs to (stream, source table, sink table).
-- A stream given a new target copies the new target in full, whichever
-- checkpoint directory it uses; watermark rows written before the sink table
-- was part of the key keep working for the target they were written for.
-- Also the README promise "the sink watermark wins over the local checkpoint".
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")

mdb.describe("issue 9: retargeting a stream, sink watermark vs local checkpoint", function()
  local src, sink, home
  setup(function()
    src = mdb.start({ name = "i9rt-source", binlog = true })
    sink = mdb.start({ name = "i9rt-sink" })
    home = cli.tmpdir()
  end)
  teardown(function() os.execute("rm -rf " .. home) end)

  local function fresh()
    src:sql([[DROP DATABASE IF EXISTS d; CREATE DATABASE d;
      CREATE TABLE d.t (id INT PRIMARY KEY, v VARCHAR(10));
      INSERT INTO d.t VALUES (1, 'a'), (2, 'b'), (3, 'c');
      CREATE TABLE d.nk (a INT, b VARCHAR(10));
      INSERT INTO d.nk VALUES (1, 'x'), (1, 'x');]])
    sink:sql("DROP DATABASE IF EXISTS d2; DROP DATABASE IF EXISTS d3; DROP DATABASE IF EXISTS d4; DROP DATABASE IF EXISTS mocdc")
  end

  local function run(tables, cp)
    return cli.run({ "run", "pipelines/binlog_to_mysql.lua", "--once", "--set", "source_uri=" .. src.uri,
      "--set", "sink_uri=" .. sink.uri, "--set", "tables=" .. tables, "--set", "checkpoint=" .. home .. "/" .. cp },
      { env = { MOCDC_HOME = home } })
  end

  local function count(t) return tonumber(sink:rows("SELECT COUNT(*) FROM " .. t)[1][1]) end
  local Q = "SELECT id, v FROM %s ORDER BY id"

  it("copies a new target in full, with a new checkpoint directory and with the same one", function()
    fresh()
    local rc, _, err = run("d.t:d2.t", "cp1")
    assert.equals(0, rc, err)
    assert.equals(3, count("d2.t"))
    src:sql("INSERT INTO d.t VALUES (4, 'd')")
    -- the issue's repro: new target, new checkpoint directory
    rc, _, err = run("d.t:d3.t", "cp2")
    assert.equals(0, rc, err)
    assert.matches("full copy d%.t %-> d3%.t: 4 rows", err)
    assert.same(src:rows(Q:format("d.t")), sink:rows(Q:format("d3.t")))
    -- new target, the checkpoint directory of the first run
    src:sql("INSERT INTO d.t VALUES (5, 'e')")
    rc, _, err = run("d.t:d4.t", "cp1")
    assert.equals(0, rc, err)
    assert.matches("full copy d%.t %-> d4%.t: 5 rows", err)
    assert.same(src:rows(Q:format("d.t")), sink:rows(Q:format("d4.t")))
    -- the earlier targets keep their own watermarks and resume from them
    src:sql("UPDATE d.t SET v = 'B' WHERE id = 2")
    rc, _, err = run("d.t:d2.t", "cp1")
    assert.equals(0, rc, err)
    assert.not_matches("full copy", err)
    assert.same(src:rows(Q:format("d.t")), sink:rows(Q:format("d2.t")))
    local wm = sink:rows("SELECT sink_table, phase FROM mocdc.watermark WHERE source_table = 'd.t' ORDER BY sink_table")
    assert.same({ { "d2.t", "cdc" }, { "d3.t", "cdc" }, { "d4.t", "cdc" } }, wm)
  end)

  it("migrates a watermark table keyed by (pipeline, source_table): old rows resume their own target", function()
    fresh()
    local rc, _, err = run("d.t:d2.t", "mig")
    assert.equals(0, rc, err)
    -- turn the watermark table back into the layout of earlier versions
    sink:sql("ALTER TABLE mocdc.watermark MODIFY source_table VARCHAR(400) NOT NULL, " ..
      "MODIFY sink_table VARCHAR(400) NOT NULL, DROP PRIMARY KEY, ADD PRIMARY KEY (pipeline, source_table)")
    -- a row the sink has but the source no longer changes: a full copy would bring it back
    sink:sql("DELETE FROM d2.t WHERE id = 1")
    src:sql("INSERT INTO d.t VALUES (6, 'f')")
    rc, _, err = run("d.t:d2.t", "mig")
    assert.equals(0, rc, err)
    assert.not_matches("full copy", err)
    assert.same({ { "2", "b" }, { "3", "c" }, { "6", "f" } }, sink:rows(Q:format("d2.t")))
    local pk = sink:rows("SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = 'mocdc' " ..
      "AND TABLE_NAME = 'watermark' AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION")
    assert.same({ { "pipeline" }, { "source_table" }, { "sink_table" } }, pk)
    -- and a new target of the migrated stream is copied in full
    rc, _, err = run("d.t:d3.t", "mig")
    assert.equals(0, rc, err)
    assert.matches("full copy d%.t %-> d3%.t: 4 rows", err)
    assert.same(src:rows(Q:format("d.t")), sink:rows(Q:format("d3.t")))
  end)

  it("the sink watermark wins over the local checkpoint (behind, or missing)", function()
    fresh()
    local rc, _, err = run("d.nk:d2.nk", "win")
    assert.equals(0, rc, err)
    assert.equals(2, count("d2.nk"))
    -- keep the local checkpoint as it is now, let the sink move on
    os.execute("cp -a " .. cli.q(home .. "/win") .. " " .. cli.q(home .. "/win-old"))
    src:sql("INSERT INTO d.nk VALUES (2, 'y')")
    rc, _, err = run("d.nk:d2.nk", "win")
    assert.equals(0, rc, err)
    assert.equals(3, count("d2.nk"))
    -- the local checkpoint goes back to before that insert: a keyless table
    -- would get the row twice if the local position were trusted
    os.execute("rm -rf " .. cli.q(home .. "/win") .. " && mv " .. cli.q(home .. "/win-old") .. " " .. cli.q(home .. "/win"))
    src:sql("INSERT INTO d.nk VALUES (3, 'z')")
    rc, _, err = run("d.nk:d2.nk", "win")
    assert.equals(0, rc, err)
    local q = "SELECT a, b, COUNT(*) FROM %s GROUP BY a, b ORDER BY a"
    assert.same(src:rows(q:format("d.nk")), sink:rows(q:format("d2.nk")))
    assert.equals(4, count("d2.nk"))
    -- no local checkpoint at all: the sink's watermark still says where to go on
    src:sql("INSERT INTO d.nk VALUES (4, 'w')")
    rc, _, err = run("d.nk:d2.nk", "win-new")
    assert.equals(0, rc, err)
    assert.not_matches("full copy", err)
    assert.same(src:rows(q:format("d.nk")), sink:rows(q:format("d2.nk")))
    assert.equals(5, count("d2.nk"))
  end)
end)
