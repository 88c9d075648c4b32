-- Executes the jobs a pipeline declared: opens source and sink, validates
-- every table before writing anything, then copies / streams.
local checkpoint = require("mocdc.checkpoint")
local copy = require("mocdc.copy")
local errors = require("mocdc.errors")
local log = require("mocdc.log")
local options = require("mocdc.options")
local progress = require("mocdc.progress")
local snapshot = require("mocdc.source.snapshot")
local util = require("mocdc.util.lib")

local M = {}

local function home()
  local h = os.getenv("MOCDC_HOME")
  if h and h ~= "" then return h end
  return (os.getenv("HOME") or "/tmp") .. "/.mocdc"
end
M.home = home

function M.open_sink(job, name)
  local o = job.opts
  local kind = job.target:match("^(%a[%w+.-]*)://")
  if kind == "file" then
    return require("mocdc.sink.file").open(job.target, { pipeline = name, opts = o })
  end
  if kind ~= "mysql" and kind ~= "matrixone" then
    errors.raise(string.format("sink '%s': unsupported scheme (expected mysql://user:pw@host:port)",
      log.mask(job.target)), 2)
  end
  local dialect = o.sinkType or o.dialect or (kind == "matrixone" and "matrixone" or nil)
  return require("mocdc.sink.mysql").open(job.target, { pipeline = name, dialect = dialect,
    maxSqlLength = o.maxSqlLength, password = o.password, sendSqlTimeout = o.sendSqlTimeout,
    loadData = o.loadData, errorHandleOption = o.errorHandleOption,
    deadLetter = o.deadLetter or ((o.checkpointLocation or (home() .. "/pipelines/" .. name)) .. "/dead_letter.jsonl"),
    onDeadLetter = o.onDeadLetter })
end

function M.open_store(job, name)
  local dir = job.opts.checkpointLocation or (home() .. "/pipelines/" .. name)
  local store, err = checkpoint.open_location(dir)
  if not store then errors.raise(string.format("checkpointLocation %s: %s", dir, err), 2) end
  return store, dir
end

function M.run_snapshot(job, ctx, run_opts)
  local so = job.stream.source.opts
  local src = snapshot.open(so)
  local sink = M.open_sink(job, ctx.name)
  local store, dir = M.open_store(job, ctx.name)
  local ok, err = pcall(function()
    src:begin_snapshot()
    local list = src:tables()
    -- validate every table before the first write
    for _, t in ipairs(list) do copy.prepare(t, sink, job.stream.transforms) end
    sink:ensure_watermark()
    local cctx = copy.context(src, sink, store, job.stream.transforms, so, { position = src.position })
    local summary = {}
    for _, t in ipairs(list) do
      local n, el, skipped = copy.copy_table(cctx, t)
      local dst = t.dst_db .. "." .. t.dst_table
      if not skipped then
        log.info("copied %s -> %s: %s rows in %.2f s (%s rows/s)", t.src_label, dst, progress.fmt_int(n), el,
          progress.fmt_int(el > 0 and n / el or n))
      end
      summary[#summary + 1] = { src = t.src_label, dst = dst, rows = n, seconds = el, skipped = skipped }
    end
    src:end_snapshot()
    return summary
  end)
  src:close()
  sink:close()
  store:close()
  if not ok then error(err, 0) end
  return err
end

-- Refuse, before anything is opened, an option the job's source or sink kind
-- does not honour (mocdc.options.SUPPORTED).
function M.check_options(job)
  local kind = options.source_kind(job.stream.source.kind, require("mocdc.source.diff").interval(job) ~= nil)
  options.check(kind, options.sink_kind(job.target), job.stream.source.opts, job.opts)
end

function M.run(ctx, run_opts)
  local results = {}
  for _, job in ipairs(ctx.jobs) do M.check_options(job) end
  for _, job in ipairs(ctx.jobs) do
    local kind = job.stream.source.kind
    if kind == "snapshot" and require("mocdc.source.diff").interval(job) then
      -- duration = N: full copy, then a chunk-diff iteration every N seconds
      results[#results + 1] = require("mocdc.source.diff").run(job, ctx, run_opts)
    elseif kind == "snapshot" then
      results[#results + 1] = M.run_snapshot(job, ctx, run_opts)
    elseif kind == "matrixone" then
      results[#results + 1] = require("mocdc.source.matrixone").run(job, ctx, run_opts)
    elseif kind == "binlog" then
      results[#results + 1] = require("mocdc.cdc").run(job, ctx, run_opts)
    else
      errors.raise("unknown source kind " .. tostring(kind), 2)
    end
  end
  return results
end

return M
