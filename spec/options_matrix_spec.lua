-- Issue 10: every documented option x each source kind and sink kind is
-- honoured (by the spec named in the table, which must exist and hold that
-- test) or refused with one line naming the option and the kind (exit 2):
-- none parsed and ignored. The refusal is mocdc.options.check, called by the
-- runner before anything is opened (the last describe runs it through `mocdc run`).
local options = require("mocdc.pipeline.options")
local errors = require("mocdc.errors")
local cli = require("spec.support.cli")

local SOURCES = { "snapshot", "binlog", "snapshot+duration", "matrixone" }
local SINKS = { "mysql", "file" }

-- specs that show an option has its effect: file, and the text of one it(...)
local S = {
  copy = { "spec/integration/full_copy_spec.lua", "copies seed 000's orders into analytics_db.orders_backup exactly" },
  bl = { "spec/integration/binlog_pipeline_spec.lua", "runs seed 000's scenario: full copy, then insert/delete/update" },
  diff = { "spec/integration/snapshot_diff_spec.lua", "copies, then fetches nothing when nothing changed, then only" },
  mo = { "spec/integration/matrixone_emulated_spec.lua", "copies at a snapshot, then applies DATA BRANCH DIFF" },
  file = { "spec/integration/binlog_pipeline_spec.lua", "writes seed 004's JSONL change records with the file sink" },
  -- shared code: every kind resolves its tables with mocdc.pipeline.tables and opens the source with source.mysql
  mapping = { "spec/pipeline_unit_spec.lua", "parses the mo_cdc mapping form" },
  regex = { "spec/pipeline_unit_spec.lua", "rejects an invalid regex with the option name" },
  level = { "spec/pipeline_unit_spec.lua", "refuses an inconsistent level before touching the server" },
  exclude = { "spec/integration/task_more_spec.lua", "--exclude REGEX: excluded tables never appear in the sink" },
  hostport = { "spec/options_matrix_spec.lua", "host, port and userName make the source URI of every kind" },
  idcols = { "spec/integration/binlog_pipeline_spec.lua", "uses idCols as the key of a table without a primary key" },
  chunk = { "spec/integration/conn_spec.lua", "returns composite last keys and copies a big table in chunks" },
  lock = { "spec/integration/binlog_pipeline_spec.lua", "takes the snapshot position under a brief read lock" },
  gtid = { "spec/integration/binlog_pipeline_spec.lua", "starts from a GTID without a full copy" },
  nofull = { "spec/integration/task_more_spec.lua", "--no-full: existing rows are not copied, later changes arrive" },
  monofull = { "spec/integration/issue10_matrixone_nofull_spec.lua", "copies none of the existing rows, then applies" },
  ts = { "spec/integration/issue9_binlog_options_spec.lua", "startTs / endTs (UTC, whatever mocdc's time zone)" },
  sid = { "spec/integration/issue9_binlog_options_spec.lua", "serverId: the source sees that replica id" },
  hb = { "spec/integration/issue9_binlog_options_spec.lua", "heartbeat: on heartbeats alone the watermark follows the source" },
  txn = { "spec/integration/issue9_binlog_options_spec.lua", "maxTxnRows: a sink transaction is committed once it holds that many rows" },
  start = { "spec/integration/issue9_binlog_options_spec.lua", "bingLogNamePrefix + binlogIndex + binlogFileOffset: starts there" },
  ddl = { "spec/integration/binlog_pipeline_spec.lua", "stops on DDL without mergeSchema with one line naming the DDL" },
  gate = { "spec/integration/snapshot_diff_spec.lua", "skips the CHECKSUM TABLE gate after an iteration that found changes" },
  full = { "spec/integration/snapshot_diff_spec.lua", "system-versioned tables get the periodic full check too" },
  bisect = { "spec/integration/snapshot_diff_spec.lua", "bisects a big changed chunk, rebalances, and commits big" },
  par = { "spec/integration/snapshot_diff_spec.lua", "sums chunks on two source connections in one snapshot" },
  nokey = { "spec/integration/snapshot_diff_spec.lua", "diffs composite string keys, binary keys and tables without a key" },
  vers = { "spec/integration/snapshot_diff_spec.lua", "reads only the changed keys of a system-versioned table" },
  ucol = { "spec/integration/snapshot_diff_spec.lua", "diffs a table by its updateColumn: changed rows by an index range" },
  umax = { "spec/integration/snapshot_diff_spec.lua", "updateColumn: more changed rows than updateColumnMaxKeys" },
  margin = { "spec/integration/snapshot_diff_spec.lua", "updateColumn: a transaction open across a snapshot is not missed" },
  chunks = { "spec/integration/matrixone_emulated_spec.lua", "falls back to chunk checksums with time travel" },
  pitr = { "spec/integration/matrixone_emulated_spec.lua", "refuses a source without PITR, saying how to create one" },
  mosql = { "spec/matrixone_sql_spec.lua", "sends exactly these statements for a snapshot round" },
  mopipe = { "spec/matrixone_sql_spec.lua", "pipelines/mo_to_mo.lua: production_db.user_activities" },
  moseed = { "spec/integration/task_seed_spec.lua", "seed 001: MatrixOne-to-MatrixOne walkthrough" },
  sqlmax = { "spec/integration/issue9_sink_options_spec.lua", "maxSqlLength: default the smaller of 4 MiB and max_allowed_packet" },
  flush = { "spec/integration/issue9_sink_options_spec.lua", "flushInterval / duration: seconds between sink commits while the stream is busy" },
  sqltimeout = { "spec/integration/issue9_sink_options_spec.lua", "sendSqlTimeout: a sink statement that waits longer fails after that many seconds" },
  chunksize = { "spec/integration/issue9_sink_options_spec.lua", "chunkSize: rows per sink transaction of the full copy, 100000 by default" },
  maxsql = { "spec/integration/task_more_spec.lua", "--max-sql-length N: no statement sent to the sink is longer than N" },
  eh = { "spec/integration/task_more_spec.lua", "--error-handle-option ignore: the other rows arrive" },
  cp = { "spec/integration/full_copy_spec.lua", "resumes after kill -9 without losing or doubling rows" },
}

local ALL4 = function(ref) return { snapshot = ref, binlog = ref, ["snapshot+duration"] = ref, matrixone = ref } end
local INTERVAL = { "spec/options_matrix_spec.lua", "duration sets the diff interval given to load.* or save.append" }
local DIFF2 = function(ref) return { ["snapshot+duration"] = ref, matrixone = ref } end

-- option -> where it is given (source: load.*, sink: save.append), the source
-- kinds that honour it (with the spec showing it), the sink kinds that honour it.
local MATRIX = {
  -- README "Options (both)"
  { "uri", "source", { snapshot = S.copy, binlog = S.bl, ["snapshot+duration"] = S.diff, matrixone = S.mo } },
  { "host", "source", ALL4(S.hostport) },
  { "port", "source", ALL4(S.hostport) },
  { "userName", "source", ALL4(S.hostport) },
  { "password", "source", ALL4(S.hostport) },
  { "tables", "source", { snapshot = S.copy, binlog = S.bl, ["snapshot+duration"] = S.diff, matrixone = S.mo } },
  { "databases", "source", ALL4(S.level) },
  { "databaseNamePattern", "source", ALL4(S.regex) },
  { "tableNamePattern", "source", ALL4(S.regex) },
  { "exclude", "source", ALL4(S.exclude) },
  { "level", "source", ALL4(S.level) },
  { "idCols", "source", ALL4(S.idcols) },
  { "idCols", "sink", ALL4(S.idcols) },
  { "chunkSize", "source", { snapshot = S.chunksize, binlog = S.chunk, ["snapshot+duration"] = S.chunk,
    matrixone = S.chunk } },
  { "batchSize", "source", ALL4(S.bisect) },
  { "batchSize", "sink", DIFF2(S.bisect), { "mysql" } },
  { "password", "sink", ALL4(S.hostport) },
  { "duration", "source", { ["snapshot+duration"] = INTERVAL, matrixone = INTERVAL } },
  -- README "Binlog only" (and the pipelines' snapshotLock / startGtid)
  { "bingLogNamePrefix", "source", { binlog = S.start } },
  { "binlogIndex", "source", { binlog = S.start } },
  { "binlogFileOffset", "source", { binlog = S.start } },
  { "noFull", "source", { binlog = S.nofull, matrixone = S.monofull } },
  { "startTs", "source", { binlog = S.ts } },
  { "endTs", "source", { binlog = S.ts } },
  { "serverId", "source", { binlog = S.sid } },
  { "heartbeat", "source", { binlog = S.hb } },
  { "maxTxnRows", "source", { binlog = S.txn } },
  { "startGtid", "source", { binlog = S.gtid } },
  { "snapshotLock", "source", { snapshot = S.lock, binlog = S.lock, ["snapshot+duration"] = S.lock } },
  -- README "Snapshot-diff specifics"
  { "gate", "source", DIFF2(S.gate), { "mysql" } },
  { "fullCheckInterval", "source", DIFF2(S.full), { "mysql" } },
  { "checksum", "source", DIFF2(S.chunks), { "mysql" } },
  { "checksumParallel", "source", DIFF2(S.par), { "mysql" } },
  { "diffChunkRows", "source", DIFF2(S.bisect), { "mysql" } },
  { "leafRows", "source", DIFF2(S.bisect), { "mysql" } },
  { "noKeyMaxRows", "source", DIFF2(S.nokey), { "mysql" } },
  { "versioned", "source", { ["snapshot+duration"] = S.vers }, { "mysql" } },
  { "updateColumn", "source", { ["snapshot+duration"] = S.ucol }, { "mysql" } },
  { "updateColumnMaxKeys", "source", { ["snapshot+duration"] = S.umax }, { "mysql" } },
  { "changeScanMargin", "source", { ["snapshot+duration"] = S.margin }, { "mysql" } },
  -- MatrixOne (README "MatrixOne, honestly" and the PITR message)
  { "pitr", "source", { matrixone = S.pitr } },
  { "minPitrHours", "source", { matrixone = S.pitr } },
  { "account", "source", { matrixone = S.mosql } },
  { "diff", "source", { matrixone = S.chunks } },
  -- README "Sinks" options
  { "target", "sink", ALL4(S.file) },
  { "checkpointLocation", "sink", ALL4(S.cp) },
  { "maxSqlLength", "sink", { snapshot = S.maxsql, binlog = S.sqlmax, ["snapshot+duration"] = S.maxsql,
    matrixone = S.maxsql }, { "mysql" } },
  { "mergeSchema", "sink", { binlog = S.ddl } },
  { "duration", "sink", { binlog = S.flush, ["snapshot+duration"] = S.diff, matrixone = S.mopipe } },
  { "flushInterval", "sink", { binlog = S.flush } },
  { "sendSqlTimeout", "sink", ALL4(S.sqltimeout), { "mysql" } },
  { "mode", "sink", ALL4(S.file) },
  { "sinkType", "sink", ALL4(S.moseed), { "mysql" } },
  { "errorHandleOption", "sink", ALL4(S.eh), { "mysql" } },
}

local VALUES = { mode = "Append", errorHandleOption = "stop", checksum = "crc", gate = "auto", level = "account",
  sinkType = "mysql", updateColumn = "u", diff = "branch", binlogFileOffset = 4, maxSqlLength = 65536 }

local function read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

-- nil when accepted, else the one-line message (and its exit code)
local function check(src_kind, sink_kind, where, name)
  local so, ko = {}, {}
  ;(where == "source" and so or ko)[name] = VALUES[name] or "1"
  local ok, e = pcall(options.check, src_kind, sink_kind, so, ko)
  if ok then return nil end
  assert(errors.is(e), tostring(e))
  return e.msg, e.code
end

local function has(list, x)
  for _, v in ipairs(list) do if v == x then return true end end
  return false
end

describe("options matrix (issue 10)", function()
  it("names an existing spec for every honoured cell", function()
    local cache, cells = {}, 0
    for _, row in ipairs(MATRIX) do
      for _, kind in ipairs(SOURCES) do
        local ref = row[3][kind]
        if ref then
          cache[ref[1]] = cache[ref[1]] or read(ref[1]) or ""
          assert.truthy(cache[ref[1]]:find('it("' .. ref[2], 1, true),
            string.format("%s on %s: %s has no it(\"%s...\")", row[1], kind, ref[1], ref[2]))
          cells = cells + 1
        end
      end
    end
    assert.is_true(cells >= 100, "honoured cells: " .. cells)
  end)

  for _, row in ipairs(MATRIX) do
    local name, where, honoured, sinks = row[1], row[2], row[3], row[4] or SINKS
    it(string.format("%s (%s option): honoured or refused on every source and sink kind", name, where), function()
      for _, src in ipairs(SOURCES) do
        for _, snk in ipairs(SINKS) do
          local msg, code = check(src, snk, where, name)
          local diff_on_file = snk == "file" and (src == "snapshot+duration" or src == "matrixone")
          if diff_on_file then
            assert.equals(string.format("the %s source needs a mysql:// sink: it reads the sink's rows as the " ..
              "previous state", src), msg)
          elseif honoured[src] and has(sinks, snk) then
            assert.is_nil(msg, string.format("%s refused on %s -> %s: %s", name, src, snk, tostring(msg)))
          elseif not honoured[src] then
            assert.equals(string.format("option %s is not supported by %s source", name, src), msg)
          else
            assert.equals(string.format("option %s is not supported by %s sink", name, snk), msg)
          end
          if msg then assert.equals(2, code) end
        end
      end
    end)
  end

  it("refuses an option nobody reads (a typo) and a source option given to the sink", function()
    assert.equals("option tabels is not supported by binlog source", (check("binlog", "mysql", "source", "tabels")))
    assert.equals("option chunkSize is not supported by mysql sink", (check("snapshot", "mysql", "sink", "chunkSize")))
    assert.equals("option flushInterval is not supported by snapshot source",
      (check("snapshot", "mysql", "source", "flushInterval")))
  end)

  it("refuses a numeric option that is not a number in range, before any engine reads it", function()
    local function bad(src_kind, where, name, v)
      local so, ko = {}, {}
      ;(where == "source" and so or ko)[name] = v
      local ok, e = pcall(options.check, src_kind, "mysql", so, ko)
      assert.is_false(ok, name .. " = " .. tostring(v))
      assert.equals(2, e.code)
      return e.msg
    end
    assert.equals("option heartbeat = '1s' must be a number >= 0", bad("binlog", "source", "heartbeat", "1s"))
    assert.equals("option maxTxnRows = '0' must be a number >= 1", bad("binlog", "source", "maxTxnRows", "0"))
    assert.equals("option flushInterval = 'soon' must be a number >= 0", bad("binlog", "sink", "flushInterval", "soon"))
    assert.equals("option binlogFileOffset = '2' must be a number >= 4", bad("binlog", "source", "binlogFileOffset", 2))
    assert.equals("option serverId = '4294967296' must be a whole number in 1..4294967295",
      bad("binlog", "source", "serverId", "4294967296"))
    assert.equals("option sendSqlTimeout = '10m' must be a number >= 1", bad("snapshot", "sink", "sendSqlTimeout", "10m"))
    assert.equals("option leafRows = 'x' must be a number >= 1", bad("snapshot+duration", "source", "leafRows", "x"))
    -- every numeric option is a documented one, and numbers as strings (from --set) are fine
    for name, min in pairs(options.NUMERIC) do
      assert.is_not_nil(options.SUPPORTED[name], name)
      local kind = options.SUPPORTED[name].sources[1]
      local so, ko = {}, {}
      ;(options.SUPPORTED[name].at == "sink" and ko or so)[name] = tostring(math.max(min, 4) + 1020)
      assert.is_true(pcall(options.check, kind, "mysql", so, ko), name)
    end
  end)

  it("duration sets the diff interval given to load.* or save.append", function()
    local interval = require("mocdc.engine.snapdiff").interval
    assert.equals(7, interval({ stream = { source = { opts = { duration = "7" } } }, opts = {} }))
    assert.equals(3, interval({ stream = { source = { opts = { duration = "7" } } }, opts = { duration = 3 } }))
    assert.is_nil(interval({ stream = { source = { opts = {} } }, opts = {} }))
    -- the MatrixOne runner and the snapshot-diff runner both take their interval from it
    for _, f in ipairs({ "lua/stdlib/mocdc/engine/snapdiff.lua", "lua/stdlib/mocdc/engine/matrixone.lua" }) do
      assert.truthy(read(f):find("interval(job)", 1, true), f)
    end
  end)

  it("host, port and userName make the source URI of every kind", function()
    local snapshot = require("mocdc.source.mysql")
    assert.equals("mysql://repl@db1:3307", snapshot.source_uri({ host = "db1", port = 3307, userName = "repl" }))
    assert.equals("mysql://root@db1:3306", snapshot.source_uri({ host = "db1" }))
    -- every kind opens its source with source.mysql.open (which takes password apart from the URI)
    for _, f in ipairs({ "lua/stdlib/mocdc/engine/binlog.lua", "lua/stdlib/mocdc/pipeline/job.lua", "lua/stdlib/mocdc/engine/snapdiff.lua",
      "lua/stdlib/mocdc/engine/matrixone.lua" }) do
      assert.truthy(read(f):find("snapshot.open(", 1, true), f)
    end
  end)
end)

describe("options matrix through mocdc run (issue 10)", function()
  local dir = cli.tmpdir()
  teardown(function() os.execute("rm -rf " .. dir) end)
  local function run(src, sink, extra_src, extra_sink)
    local p = dir .. "/p.lua"
    local f = assert(io.open(p, "w"))
    f:write(string.format("save.append(%s { uri = 'mysql://root@127.0.0.1:1', tables = 'd.t'%s }, %q, " ..
      "{ checkpointLocation = %q%s })\n", src, extra_src, sink, dir .. "/cp", extra_sink))
    f:close()
    return cli.run({ "run", p, "--once" })
  end
  -- nothing listens on port 1: the refusal comes before any connection
  for _, c in ipairs({
    { "load.snapshot", "mysql://root@127.0.0.1:1", ", startTs = '2024-01-01 00:00:00'", "",
      "option startTs is not supported by snapshot source" },
    { "load.binlog", "file:///tmp/x/{db}/{table}", "", ", maxSqlLength = 65536",
      "option maxSqlLength is not supported by file sink" },
    { "load.snapshot", "mysql://root@127.0.0.1:1", ", serverId = 7", ", duration = 5",
      "option serverId is not supported by snapshot+duration source" },
    { "load.matrixone", "mysql://root@127.0.0.1:1", ", updateColumn = 'u'", "",
      "option updateColumn is not supported by matrixone source" },
    { "load.binlog", "mysql://root@127.0.0.1:1", ", heartbaet = 1", "",
      "option heartbaet is not supported by binlog source" },
    { "load.matrixone", "file:///tmp/x/{db}/{table}", "", "",
      "the matrixone source needs a mysql:// sink: it reads the sink's rows as the previous state" },
  }) do
    it(c[5], function()
      local rc, out, err = run(c[1], c[2], c[3], c[4])
      assert.equals(2, rc, err)
      assert.equals("mocdc: error: " .. c[5] .. "\n", err)
      assert.equals("", out)
    end)
  end
end)
