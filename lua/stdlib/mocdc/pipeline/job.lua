-- Executes the jobs a pipeline declared: opens source and sink, validates
-- every table before writing anything, then copies / streams.
local checkpoint = require("mocdc.checkpoint")
local copy = require("mocdc.engine.copy")
local errors = require("mocdc.errors")
local log = require("mocdc.log")
local options = require("mocdc.pipeline.options")
local progress = require("mocdc.progress")
local retry = require("mocdc.pipeline.retry")
local file_sink = require("mocdc.sink.file")
local mysql_sink = require("mocdc.sink.mysql")
local snapshot = require("mocdc.source.mysql")
local util = require("mocdc.util.lib")

local M = {}

local function home()
  local h = os.getenv("MOCDC_HOME")
  if h and h ~= "" then return h end
  return (os.getenv("HOME") or "/tmp") .. "/.mocdc"
end
M.home = home

-- The job's own directory: checkpoints, its lock, the file sink's state,
-- dead letters (checkpointLocation, else $MOCDC_HOME/pipelines/<name>).
function M.state_dir(job, name)
  return job.opts.checkpointLocation or (home() .. "/pipelines/" .. name)
end

local function open_sink(job, name)
  local o = job.opts
  local kind = job.target:match("^(%a[%w+.-]*)://")
  if kind == "file" then
    return file_sink.open(job.target, { pipeline = name, opts = o, state_dir = M.state_dir(job, name) })
  end
  if kind ~= "mysql" and kind ~= "matrixone" then
    errors.raise(string.format("sink '%s': unsupported scheme (expected mysql://user:pw@host:port)",
      log.mask(job.target)), 2)
  end
  local dialect = o.sinkType or o.dialect or (kind == "matrixone" and "matrixone" or nil)
  return mysql_sink.open(job.target, { pipeline = name, dialect = dialect,
    maxSqlLength = o.maxSqlLength, password = o.password, sendSqlTimeout = options.number(o, "sendSqlTimeout"),
    loadData = o.loadData, errorHandleOption = o.errorHandleOption,
    deadLetter = o.deadLetter or (M.state_dir(job, name) .. "/dead_letter.jsonl"),
    onDeadLetter = o.onDeadLetter })
end

function M.open_sink(job, name)
  local sink = open_sink(job, name)
  job.opened = true -- source (engines open it first) and sink open: from now on retries apply
  return sink
end

M.HOST = (function()
  local fh = io.open("/proc/sys/kernel/hostname")
  local h = fh and fh:read("*l")
  if fh then fh:close() end
  return h or os.getenv("HOSTNAME") or "localhost"
end)()

-- Who this process is, in the lock file and the sink's writer row.
function M.whoami()
  return string.format("mocdc pid %d on host %s (since %s)", util.getpid(), M.HOST, log.timestamp())
end

-- The checkpoint store of a run, locked for it: a stream has one writer, and
-- a second run with the same checkpointLocation is refused naming the first.
-- (A run with another checkpointLocation takes the stream over at the sink:
-- see sink/mysql.lua, claim.) The store's close() also releases the lock.
local Locked = {}
function Locked.__index(self, k)
  local f = self.store[k]
  if type(f) ~= "function" then return f end
  local m = function(_, ...) return f(self.store, ...) end
  rawset(self, k, m)
  return m
end

function M.open_store(job, name)
  local dir = M.state_dir(job, name)
  local lk, lerr, code = checkpoint.lock_location(dir, M.whoami())
  if not lk and code == util.EWOULDBLOCK then
    errors.raise(string.format("checkpointLocation %s is %s: a stream has one writer; stop that run first, " ..
      "or give this one its own checkpointLocation", dir, lerr))
  elseif not lk then
    errors.raise(string.format("checkpointLocation %s: %s", dir, lerr), 2)
  end
  local store, err = checkpoint.open_location(dir)
  if not store then
    lk:close()
    errors.raise(string.format("checkpointLocation %s: %s", dir, err), 2)
  end
  local locked = setmetatable({ store = store, lock = lk }, Locked)
  locked.close = function()
    store:close()
    lk:close()
  end
  return locked, dir
end

-- Make this run the writer of the stream at the sink (after open_store took
-- the checkpoint lock), creating the watermark tables. Sinks that keep their
-- state in the checkpoint store (file) are covered by its lock alone.
-- ctx.claims (a table the retry loop gives each job, see run_with_retries and
-- the task worker) remembers the epochs this job held: on a retry a stream it
-- held is claimed again only if nobody took it over meanwhile. Without it (an
-- engine run directly) every run is a new writer.
function M.claim(sink, dir, ctx)
  if not sink.claim then return sink:ensure_watermark() end
  local k = sink.pipeline .. "\0" .. sink:label()
  local held = ctx and ctx.claims
  sink:claim(M.whoami() .. ", checkpointLocation " .. dir, held and held[k])
  if held then held[k] = sink.epoch end
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
    M.claim(sink, dir, ctx)
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

-- After an iteration of an iterating engine (snapdiff, matrixone) ended at `started` (util.mono):
-- report it, then wait out the interval. true: run the next one; false: the run is over (--once,
-- a count of iterations reached, stop asked). Interrupted while waiting: exit 130, `resumes` saying
-- where the next run continues.
function M.next_iteration(ctx, run_opts, summary, iteration, interval, started, resumes)
  if ctx.on_iteration then ctx.on_iteration(summary, iteration) end
  if run_opts.once or (interval <= 0 and not run_opts.iterations) then return false end
  if run_opts.iterations and iteration >= run_opts.iterations then return false end
  local wait = interval - (util.mono() - started)
  if wait > 0 and not util.sleep(wait) then
    errors.raise("interrupted between iterations; the next run continues from " .. resumes, 130)
  end
  return not (util.stop_requested() or (ctx.should_stop and ctx.should_stop()))
end

-- The engines require this module (open_sink, open_store, claim): they are loaded when a job runs,
-- not at the top, to keep that cycle out of load order.
local function engine(name) return require("mocdc.engine." .. name) end

-- Refuse, before anything is opened, an option the job's source or sink kind
-- does not honour (mocdc.options.SUPPORTED).
function M.check_options(job)
  local kind = options.source_kind(job.stream.source.kind, engine("snapdiff").interval(job) ~= nil)
  options.check(kind, options.sink_kind(job.target), job.stream.source.opts, job.opts)
end

-- One run of a job by the engine of its source kind (no retries: the caller's
-- loop, run_with_retries below or the task worker's, decides).
local function run_job(job, ctx, run_opts)
  local kind = job.stream.source.kind
  if kind == "snapshot" and engine("snapdiff").interval(job) then
    -- duration = N: full copy, then a chunk-diff iteration every N seconds
    return engine("snapdiff").run(job, ctx, run_opts)
  elseif kind == "snapshot" then
    return M.run_snapshot(job, ctx, run_opts)
  elseif kind == "matrixone" then
    return engine("matrixone").run(job, ctx, run_opts)
  elseif kind == "binlog" then
    return engine("binlog").run(job, ctx, run_opts)
  end
  errors.raise("unknown source kind " .. tostring(kind), 2)
end
M.run_job = run_job

-- One job under the retry policy (mocdc.pipeline.retry, shared with the task worker):
-- a transient failure (sink or source restarting, lock wait timeout,
-- deadlock) reopens everything and resumes from the sink's watermark. A job
-- that never got its endpoints open (wrong host, server down at the start)
-- fails at once: retries are for a pipeline that was running.
local function run_with_retries(job, ctx, run_opts)
  local policy = retry.new(job.opts)
  local on_checkpoint = ctx.on_checkpoint
  local jctx = setmetatable({ claims = {} }, { __index = ctx })
  -- a sink commit or caught up (a position given) proves the failure is passed
  jctx.on_checkpoint = function(tables, ...)
    if select("#", ...) > 0 then
      local n = policy:recovered()
      if n > 0 then log.info("recovered after %d retr%s", n, n == 1 and "y" or "ies") end
    end
    if on_checkpoint then return on_checkpoint(tables, ...) end
  end
  while true do
    local ok, res = pcall(run_job, job, jctx, run_opts)
    if ok then return res end
    local delay = job.opened and policy:failed(res)
    if not delay then
      if policy.attempt > 0 and errors.retryable(res) then
        errors.raise(string.format("%s; still failing after %d retries over %.0f s (maxRetries = %d)",
          log.mask(errors.message(res)), policy.attempt, util.now() - policy.first, policy.limit),
          { errno = res.errno, sqlstate = res.sqlstate })
      end
      error(res, 0)
    end
    log.warn("retry %d/%d in %.1f s after: %s", policy.attempt, policy.limit, delay, log.mask(errors.message(res)))
    if not retry.wait(delay, ctx.should_stop) then
      errors.raise("interrupted while waiting to retry after: " .. log.mask(errors.message(res)), 130)
    end
  end
end

function M.run(ctx, run_opts)
  local results = {}
  for _, job in ipairs(ctx.jobs) do M.check_options(job) end
  for _, job in ipairs(ctx.jobs) do
    results[#results + 1] = run_with_retries(job, ctx, run_opts)
  end
  return results
end

return M
