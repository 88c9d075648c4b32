-- Validation of numeric pipeline options (one message for all of them).
local errors = require("mocdc.errors")
local M = {}

-- number(o, name, default[, min]): o[name] as a number >= min (default 1);
-- absent or "" gives default; anything else is one clear configuration error.
function M.number(o, name, default, min)
  local v = o[name]
  if v == nil or v == "" then return default end
  local n = tonumber(v)
  if not n or n < (min or 1) then
    errors.raise(string.format("option %s = '%s' must be a number >= %s", name, tostring(v), tostring(min or 1)), 2)
  end
  return n
end


-- truthy(v): a boolean option given as true, "true", "1", 1 or "yes".
function M.truthy(v) return v == true or v == "true" or v == "1" or v == 1 or v == "yes" end

-- Which engine honours which option. Every option a pipeline may give is listed
-- here once, with the source kinds (snapshot, binlog, snapshot+duration,
-- matrixone) whose engine reads it and the sink kinds (mysql, file) that honour
-- it; M.check refuses anything else with one line, so no option is parsed and
-- ignored. `at` says where it may be given: the load.* options ("source"), the
-- save.append options ("sink"), or either ("both"); given to save.append, an
-- option of both places is honoured by `at_sink` (default: the same kinds).
-- spec/options_matrix_spec.lua walks this table; update both together.
local ALL = { "snapshot", "binlog", "snapshot+duration", "matrixone" }
local DIFF = { "snapshot+duration", "matrixone" }
local SQL_SINK, ANY_SINK = { "mysql" }, { "mysql", "file" }

local function opt(at, sources, sinks, at_sink)
  return { at = at, sources = sources, sinks = sinks or ANY_SINK, at_sink = at_sink }
end

M.SUPPORTED = {
  -- the source endpoint and the tables (every kind: source.mysql opens it, mocdc.pipeline.tables resolves them)
  uri = opt("source", ALL), host = opt("source", ALL), port = opt("source", ALL), userName = opt("source", ALL),
  user = opt("source", ALL), password = opt("both", ALL), readTimeout = opt("source", ALL),
  connectTimeout = opt("source", ALL),
  tables = opt("source", ALL), databases = opt("source", ALL), databaseNamePattern = opt("source", ALL),
  tableNamePattern = opt("source", ALL), exclude = opt("source", ALL), level = opt("source", ALL),
  idCols = opt("both", ALL), target = opt("both", ALL),
  -- the full copy (every kind copies a table first)
  chunkSize = opt("source", ALL), batchSize = opt("both", ALL, nil, DIFF), -- save.append's: diff iterations
  snapshotLock = opt("source", { "snapshot", "binlog", "snapshot+duration" }),
  -- the binlog stream
  bingLogNamePrefix = opt("source", { "binlog" }), binlogIndex = opt("source", { "binlog" }),
  binlogFile = opt("source", { "binlog" }), binlogFileOffset = opt("source", { "binlog" }),
  startGtid = opt("source", { "binlog" }), gtid = opt("source", { "binlog" }),
  noFull = opt("source", { "binlog", "matrixone" }),
  startTs = opt("source", { "binlog" }), endTs = opt("source", { "binlog" }),
  serverId = opt("source", { "binlog" }), heartbeat = opt("source", { "binlog" }),
  heartbeatInterval = opt("source", { "binlog" }), maxTxnRows = opt("source", { "binlog" }),
  flushInterval = opt("sink", { "binlog" }),
  mergeSchema = opt("sink", { "binlog" }), -- the file sink writes DDL records
  -- snapshot diffing (load.snapshot + duration, and the chunk fallback of load.matrixone)
  -- makes load.snapshot snapshot+duration; for binlog it is save.append's (flushInterval)
  duration = opt("both", DIFF, nil, { "binlog", "snapshot+duration", "matrixone" }),
  syncInterval = opt("both", DIFF, SQL_SINK),
  gate = opt("both", DIFF, SQL_SINK), fullCheckInterval = opt("both", DIFF, SQL_SINK),
  checksum = opt("both", DIFF, SQL_SINK), checksumParallel = opt("both", DIFF, SQL_SINK),
  diffChunkRows = opt("both", DIFF, SQL_SINK), leafRows = opt("both", DIFF, SQL_SINK),
  noKeyMaxRows = opt("both", DIFF, SQL_SINK),
  versioned = opt("both", { "snapshot+duration" }, SQL_SINK),
  updateColumn = opt("both", { "snapshot+duration" }, SQL_SINK),
  updateColumnMaxKeys = opt("both", { "snapshot+duration" }, SQL_SINK),
  changeScanMargin = opt("both", { "snapshot+duration" }, SQL_SINK),
  -- MatrixOne
  account = opt("source", { "matrixone" }), diff = opt("source", { "matrixone" }),
  pitr = opt("source", { "matrixone" }), minPitrHours = opt("source", { "matrixone" }),
  snapshotLevel = opt("source", { "matrixone" }), verifyInterval = opt("source", { "matrixone" }),
  -- the sink
  checkpointLocation = opt("sink", ALL), mode = opt("sink", ALL),
  maxRetries = opt("sink", ALL), -- the retry policy of the job (mocdc.pipeline.retry)
  sinkType = opt("sink", ALL, SQL_SINK), dialect = opt("sink", ALL, SQL_SINK),
  maxSqlLength = opt("sink", ALL, SQL_SINK), sendSqlTimeout = opt("sink", ALL, SQL_SINK),
  loadData = opt("sink", ALL, SQL_SINK),
  errorHandleOption = opt("sink", ALL, SQL_SINK), deadLetter = opt("sink", ALL, SQL_SINK),
  onDeadLetter = opt("sink", ALL, SQL_SINK),
}

-- Numeric options and their least value.
M.NUMERIC = {
  port = 1, readTimeout = 1, connectTimeout = 1, chunkSize = 1, batchSize = 1,
  binlogIndex = 0, binlogFileOffset = 4, serverId = 1, heartbeat = 0, heartbeatInterval = 0, maxTxnRows = 1,
  flushInterval = 0, duration = 0, syncInterval = 0, maxSqlLength = 1024, sendSqlTimeout = 1,
  fullCheckInterval = 0, checksumParallel = 1, diffChunkRows = 1, leafRows = 1, noKeyMaxRows = 1,
  updateColumnMaxKeys = 1, changeScanMargin = 0, minPitrHours = 0, verifyInterval = 0,
}

local function has(list, x)
  for _, v in ipairs(list) do if v == x then return true end end
  return false
end

-- The kind names the refusal uses.
function M.source_kind(kind, has_interval)
  if kind == "snapshot" and has_interval then return "snapshot+duration" end
  return kind
end

function M.sink_kind(target)
  local scheme = tostring(target):match("^(%a[%w+.-]*)://")
  if scheme == "file" then return "file" end
  if scheme == "mysql" or scheme == "matrixone" then return "mysql" end
  return nil -- runner.open_sink refuses the scheme
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t or {}) do ks[#ks + 1] = tostring(k) end
  table.sort(ks)
  return ks
end

-- check(src_kind, sink_kind, source_opts, sink_opts): raises (exit 2) on the
-- first option, in name order, that this combination does not honour:
-- "option X is not supported by <kind> source" / "... by <kind> sink".
function M.check(src_kind, sink_kind, source_opts, sink_opts)
  local function one(name, where)
    local s = M.SUPPORTED[name]
    if not s or (s.at ~= "both" and s.at ~= where) then
      if where == "source" then
        errors.raise(string.format("option %s is not supported by %s source", name, src_kind), 2)
      end
      errors.raise(string.format("option %s is not supported by %s sink", name, sink_kind or "this"), 2)
    end
    if not has(where == "sink" and s.at_sink or s.sources, src_kind) then
      errors.raise(string.format("option %s is not supported by %s source", name, src_kind), 2)
    end
    if sink_kind and not has(s.sinks, sink_kind) then
      errors.raise(string.format("option %s is not supported by %s sink", name, sink_kind), 2)
    end
  end
  if sink_kind == "file" and has(DIFF, src_kind) then
    errors.raise(string.format("the %s source needs a mysql:// sink: it reads the sink's rows as the previous state",
      src_kind), 2)
  end
  for _, k in ipairs(sorted_keys(source_opts)) do one(k, "source") end
  for _, k in ipairs(sorted_keys(sink_opts)) do one(k, "sink") end
  -- numbers: checked here, so an engine's tonumber never turns a typo into its default
  for _, o in ipairs({ source_opts or {}, sink_opts or {} }) do
    for _, k in ipairs(sorted_keys(o)) do
      local min = M.NUMERIC[k]
      if min then
        local n = M.number(o, k, nil, min)
        if k == "serverId" and n and (n ~= math.floor(n) or n > 4294967295) then
          errors.raise(string.format("option serverId = '%s' must be a whole number in 1..4294967295", tostring(o[k])), 2)
        end
      end
    end
  end
end

return M
