-- Issue 9: snapshot-diff crash safety (README "Snapshot-diff specifics" 4.):
-- `mocdc run` is SIGKILLed in the middle of a big diff iteration (some changed
-- chunks committed, the stored object list marking the unfinished one), and
-- the next run converges: sink == source, nothing lost, nothing applied twice,
-- a keyless table (duplicate rows) included.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local util = require("mocdc.util.lib")
local cjson = require("cjson")

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

mdb.describe("snapshot diff: kill -9 mid-iteration (issue 9)", function()
  local src, sink, dir

  setup(function()
    src = mdb.start({ name = "diffcrash-source" })
    sink = mdb.start({ name = "diffcrash-sink" })
    dir = cli.tmpdir()
  end)
  teardown(function()
    if os.getenv("MOCDC_TEST_KEEP") ~= "1" then os.execute("rm -rf " .. dir) end
  end)

  local function same(tbl_src, tbl_dst, order)
    local a = src:rows("SELECT * FROM " .. tbl_src .. " ORDER BY " .. order)
    local b = sink:rows("SELECT * FROM " .. tbl_dst .. " ORDER BY " .. order)
    assert.equals(#a, #b, tbl_dst .. ": row count")
    assert.same(a, b)
    return #a
  end

  local function num(c, sql) return tonumber(assert(c:query(sql))[1][1]) end

  it("converges after a SIGKILL between the pieces of an iteration, repeating nothing", function()
    local N = 40000
    src:sql("CREATE DATABASE shop")
    src:sql(string.format([[CREATE TABLE shop.k (id INT PRIMARY KEY, v INT NOT NULL, pad VARCHAR(60) NOT NULL);
      INSERT INTO shop.k SELECT seq, seq, REPEAT('p', 60) FROM seq_1_to_%d;
      CREATE TABLE shop.nk (a INT, b VARCHAR(10));
      INSERT INTO shop.nk SELECT seq %% 300, IF(seq %% 11 = 0, NULL, 'x') FROM seq_1_to_2000;]], N), "shop")
    local script = dir .. "/crash.lua"
    -- the keyless table first: its iteration is committed when the kill lands in shop.k's
    write(script, string.format([[
      local s = load.snapshot { uri = %q, tables = "shop.nk:copy.nk,shop.k:copy.k", diffChunkRows = 500 }
      save.append(s, %q, { duration = 1, batchSize = 200, checkpointLocation = %q })
    ]], src.uri, sink.uri, dir .. "/cp"))
    local env = { env = { MOCDC_HOME = dir } }
    local rc, _, err = cli.run({ "run", script, "--once" }, env)
    assert.equals(0, rc, err)
    same("shop.k", "copy.k", "id")

    -- every chunk of shop.k changes (updates, deletes, inserts past the end);
    -- shop.nk gets more duplicates and loses some
    src:sql([[UPDATE shop.k SET v = -v;
      DELETE FROM shop.k WHERE id % 97 = 0;
      INSERT INTO shop.k SELECT 100000 + seq, seq, 'new' FROM seq_1_to_500;
      INSERT INTO shop.nk SELECT a, b FROM shop.nk WHERE a < 30;
      DELETE FROM shop.nk WHERE a = 299 LIMIT 3;]], "shop")
    local deletes, inserts = math.floor(N / 97), 500
    local updates = N - deletes
    local nk_rows = tonumber(src:rows("SELECT COUNT(*) FROM shop.nk")[1][1])

    -- run the iteration and SIGKILL it once some of shop.k's changes are committed
    local watch = assert(require("mocdc.conn").open(sink.uri))
    local pid = cli.spawn({ "run", script, "--once" }, dir .. "/killed.log", env)
    -- (polled every few ms, not eventually()'s 100 ms: the kill must land while pieces remain)
    local seen
    local deadline = util.mono() + 60
    while not seen and util.mono() < deadline and cli.alive(pid) do
      local n = num(watch, "SELECT COUNT(*) FROM copy.k WHERE v < 0")
      if n > 0 then util.kill(pid, 9) seen = n else util.sleep(0.005) end
    end
    assert.is_truthy(seen, "no piece of shop.k's iteration was committed:\n" .. (io.open(dir .. "/killed.log"):read("*a")))
    assert.is_true(cli.wait(pid, 10), "mocdc run exits on SIGKILL")
    -- the kill landed mid-iteration: some but not all of the changes are in the sink
    local applied_updates = num(watch, "SELECT COUNT(*) FROM copy.k WHERE v < 0")
    local applied_deletes = N - num(watch, "SELECT COUNT(*) FROM copy.k WHERE id <= " .. N)
    local applied_inserts = num(watch, "SELECT COUNT(*) FROM copy.k WHERE id > " .. N)
    assert.is_true(applied_updates >= seen and applied_updates < updates,
      string.format("%d of %d updates applied when killed", applied_updates, updates))
    assert.is_true(applied_deletes < deletes and applied_inserts < inserts,
      string.format("%d deletes, %d inserts applied when killed", applied_deletes, applied_inserts))
    -- the stored list is a piece's: no gate, the chunk being processed marked unknown (n = -1)
    local state = cjson.decode(assert(watch:query("SELECT state FROM mocdc.diff_state WHERE source_table LIKE 'shop.k -> %'"))[1][1])
    assert.equals(cjson.null, state.gate)
    local unknown = 0
    for _, n in ipairs(state.n) do if n == -1 then unknown = unknown + 1 end end
    assert.equals(1, unknown, "chunks marked unfinished")
    -- shop.nk's iteration had committed: exactly the source's rows, duplicates included
    assert.equals(nk_rows, num(watch, "SELECT COUNT(*) FROM copy.nk"))
    watch:close()

    -- the next run applies exactly what is missing, and converges
    rc, _, err = cli.run({ "run", script, "--once" }, env)
    assert.equals(0, rc, err)
    local i, u, d = err:match("diff shop%.k %-> copy%.k: [^\n]* applied (%d+) inserts, (%d+) updates, (%d+) deletes")
    assert.same({ inserts - applied_inserts, updates - applied_updates, deletes - applied_deletes },
      { tonumber(i), tonumber(u), tonumber(d) }, err)
    assert.not_matches("diff shop%.nk", err) -- nothing left to do there
    assert.equals(N - deletes + inserts, same("shop.k", "copy.k", "id"))
    assert.equals(nk_rows, same("shop.nk", "copy.nk", "a, b"))
    -- and a run after that finds nothing
    rc, _, err = cli.run({ "run", script, "--once" }, env)
    assert.equals(0, rc, err)
    assert.not_matches(" applied ", err)
  end)
end)
