-- Issue 3, memory: a single 1,000,000-row source transaction streams through
-- mocdc with bounded memory (peak RSS under 200 MB) and arrives exactly.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")

mdb.describe("a 1,000,000-row transaction (issue 3)", function()
  local src, sink, home
  setup(function()
    src = mdb.start({ name = "big-source", binlog = true, extra = { "max_binlog_cache_size=4G" } })
    sink = mdb.start({ name = "big-sink" })
    home = cli.tmpdir()
  end)
  teardown(function() os.execute("rm -rf " .. home) end)

  it("applies it with peak RSS under 200 MB", function()
    src:sql("CREATE DATABASE big; CREATE TABLE big.t (id INT PRIMARY KEY, v VARCHAR(64), n BIGINT)")
    local args = { "run", "pipelines/binlog_to_mysql.lua", "--set", "source_uri=" .. src.uri, "--set", "sink_uri=" .. sink.uri,
      "--set", "tables=big.t", "--set", "checkpoint=" .. home .. "/cp", "--once" }
    local rc, _, err = cli.run(args, { env = { MOCDC_HOME = home } })
    assert.equals(0, rc, err)
    src:sql("USE big; START TRANSACTION; INSERT INTO t SELECT seq, MD5(seq), seq * 3 FROM seq_1_to_1000000; COMMIT;")
    rc, _, err = cli.run(args, { env = { MOCDC_HOME = home } })
    assert.equals(0, rc, err)
    local rss = tonumber(err:match("peak RSS (%d+) MB"))
    assert.is_not_nil(rss, err)
    assert.is_true(rss < 200, "peak RSS " .. tostring(rss) .. " MB")
    local q = "SELECT COUNT(*), SUM(CRC32(CONCAT_WS('#', id, v, n))) FROM big.t"
    assert.same(src:rows(q), sink:rows(q))
    print(string.format("\n  1,000,000-row transaction: mocdc peak RSS %d MB", rss))
  end)
end)
