-- The background worker of one task (`mocdc task-worker ID`, launched by
-- task/supervisor.lua): registers itself in the task's status, runs the
-- task's job through the job lifecycle (pipeline/job.lua, the engine its
-- source needs) under the retry policy (pipeline/retry.lua), writes progress,
-- retries and per-table failures into the status (MatrixOne's err-msg forms)
-- and stops at a safe point once the desired state is no longer running.
local cjson = require("cjson")
local conn = require("mocdc.conn")
local errors = require("mocdc.errors")
local job = require("mocdc.pipeline.job")
local log = require("mocdc.log")
local retry = require("mocdc.pipeline.retry")
local stream = require("mocdc.pipeline.stream")
local state = require("mocdc.task.state")
local supervisor = require("mocdc.task.supervisor")
local util = require("mocdc.util.lib")

local M = {}

local key, get_json, go_time = state.key, state.get_json, state.go_time

-- The pipeline job of a task (a binlog stream; the worker points it at
-- another engine when the source needs one).
function M.job_of(cfg)
  local so = {
    uri = cfg.source_uri, tables = cfg.tables, exclude = cfg.exclude, noFull = cfg.no_full,
    startTs = cfg.start_ts, endTs = cfg.end_ts,
  }
  if cfg.level == "database" and not cfg.tables then so.databases = cfg.databases end
  if cfg.start_file then so.binlogFile, so.binlogFileOffset = cfg.start_file, cfg.start_pos end
  return {
    stream = stream.new({ kind = "binlog", opts = so }),
    target = cfg.sink_uri,
    opts = { sinkType = cfg.sink_type == "matrixone" and "matrixone" or nil, maxSqlLength = cfg.max_sql_length,
      sendSqlTimeout = cfg.send_sql_timeout, errorHandleOption = cfg.error_handle_option,
      checkpointLocation = cfg.checkpoint_dir, deadLetter = cfg.dead_letter },
  }
end

M.BINLOG_SETTINGS = "SELECT @@log_bin, @@binlog_format"

-- Does the answer to BINLOG_SETTINGS say the source has a row binlog?
function M.row_binlog(r)
  return r and r[1] and tostring(r[1][1]) == "1" and tostring(r[1][2]):upper() == "ROW" or false
end

-- Point the job at the engine its source needs: binlog when the source has a
-- row binlog; MatrixOne's snapshots + DATA BRANCH DIFF every second (its own
-- CDC polls at 200 ms); else a full copy, then chunk-checksum diff iterations.
local function choose_engine(cfg, j)
  local c, cerr, cerrno, cstate = conn.open(cfg.source_uri, { role = "source" })
  if not c then errors.open_failed(cerr, cerrno, nil, cstate) end
  local r, rerr, rerrno, rstate = c:query(M.BINLOG_SETTINGS)
  local flavour = c.flavour
  c:close()
  if flavour == "matrixone" then
    j.stream.source.kind = "matrixone"
    j.opts.duration = j.opts.duration or 1
  elseif not r then
    errors.raise_sql(string.format("source %s: reading its binlog settings failed: %s", c.label, tostring(rerr)),
      rerrno, rstate)
  elseif not M.row_binlog(r) then
    j.stream.source.kind = "snapshot"
    j.opts.duration = j.opts.duration or 2
  end
end

local Worker = {}
Worker.__index = Worker

-- Write the status (not once the task was dropped: nothing would remove it).
function Worker:save()
  if self.st:get(key(self.id, "config")) then self.st:set(key(self.id, "status"), cjson.encode(self.status)) end
end

function Worker:desired_now()
  local v, err = self.st:get(key(self.id, "desired"))
  if v == nil and err then return nil end -- store busy: unknown
  return v or "dropped"
end

-- SIGTERM, or the desired state (read every 0.5 s at most) no longer running.
function Worker:stop_wanted()
  if util.stop_requested() then return true end
  local now = util.mono()
  if now - self.last_poll > 0.5 then
    self.last_poll = now
    self.desired = self:desired_now() or self.desired
  end
  return self.desired ~= "running"
end

-- Take the task in its status; false when another worker runs it or the
-- operator no longer wants it run (never two workers for one task).
function Worker:register()
  local status, cfg = self.status, self.cfg
  if status.pid ~= self.pid and supervisor.status_alive(status, self.id) and status.state == "running" then
    log.warn("task %s: worker %d is already running it; exiting", cfg.name, status.pid)
    return false
  end
  local desired = self:desired_now()
  if desired ~= "running" then
    log.info("task %s: not starting (desired state is %s)", cfg.name, tostring(desired))
    if status.state == "starting" then status.state = "stopped" self:save() end
    return false
  end
  status.state, status.pid, status.host, status.err, status.started = "running", self.pid, job.HOST, "", util.now()
  status.table_err = nil -- stopped tables are retried by a new worker
  status.launched, status.finished = nil, nil
  status.checkpoint = status.checkpoint or {}
  self:save()
  log.info("task %s (%s) worker %d started", cfg.name, self.id, self.pid)
  self.last_poll = util.mono()
  self.desired = self:desired_now() or "running" -- re-read after registering (a pause may have raced us)
  return true
end

-- The job's context: its progress, per-table failures and dead letters go
-- into the status; its retries claim the stream again only while nobody took
-- it (ctx.claims, pipeline/job.lua claim).
function Worker:context()
  local status, policy, name = self.status, self.policy, self.cfg.name
  local last_status = 0
  local ctx = { name = "task:" .. self.id, vars = {}, claims = {} }
  ctx.should_stop = function() return self:stop_wanted() end
  -- on_checkpoint(tables) once positioned; (tables, pos) after a sink commit or
  -- when idle and caught up: only the latter proves the failure point is passed
  ctx.on_checkpoint = function(tables, ...)
    local pos = ...
    local now = util.now()
    for _, t in ipairs(tables) do
      if not t.failed then status.checkpoint[t.src_label] = now end
    end
    if pos then status.position = pos end
    local recovered = policy.attempt > 0 and select("#", ...) > 0
    if recovered then
      local n = policy:recovered()
      log.info("task %s: recovered after %d retr%s", name, n, n == 1 and "y" or "ies")
      status.err = status.table_err or ""
    end
    if recovered or util.mono() - last_status > 0.5 then
      last_status = util.mono()
      self:save()
    end
  end
  -- one table failed (not transient): it stops, the others go on (per-table errors)
  ctx.on_table_error = function(t, msg)
    local parts = { status.table_err }
    parts[#parts + 1] = string.format("N:%s:%s:%s", go_time(util.now()), t.src_label, log.mask(msg))
    status.table_err = table.concat(parts, "; ")
    status.err = status.table_err
    self:save()
  end
  ctx.on_dead_letter = function(n, path)
    status.dead_letters = (status.dead_letters or 0) + n
    status.dead_letter_path = path
    self:save()
  end
  return ctx
end

-- One run of the task's job: true when it ended by itself, else false and the error.
local function attempt(cfg, ctx)
  local j = M.job_of(cfg)
  j.opts.onDeadLetter = ctx.on_dead_letter
  return pcall(function()
    choose_engine(cfg, j)
    return job.run_job(j, ctx, {})
  end)
end

-- Run the job until it ends, fails for good or a stop is wanted: "finished",
-- "failed" (status.err says why) or "paused".
function Worker:loop(ctx)
  local status, policy, cfg = self.status, self.policy, self.cfg
  while true do
    local ok, e = attempt(cfg, ctx)
    if self:stop_wanted() then return "paused" end
    if ok then return "finished" end
    local msg = log.mask(errors.message(e))
    local delay = policy:failed(e)
    if not delay then
      if policy.attempt > 0 and errors.retryable(e) then
        msg = string.format("%s; still failing after %d retries over %.0f s (maxRetries = %d)", msg, policy.attempt,
          util.now() - policy.first, policy.limit)
      end
      status.err = msg
      log.error("task %s stopped: %s", cfg.name, msg)
      return "failed"
    end
    -- MatrixOne's form: R:<count>:<first>:<last>:<msg>
    status.err = string.format("R:%d:%s:%s:%s", policy.attempt, go_time(policy.first), go_time(util.now()), msg)
    self:save()
    log.warn("task %s: retry %d/%d in %.1f s after: %s", cfg.name, policy.attempt, policy.limit, delay, msg)
    if not retry.wait(delay, ctx.should_stop) then return "paused" end
  end
end

-- The last status: stopped, and why.
function Worker:finish(outcome)
  local status, cfg = self.status, self.cfg
  if outcome == "finished" then
    status.err, status.finished = "", true
    log.info("task %s finished: reached the end of the requested range (--end-ts %s)", cfg.name, tostring(cfg.end_ts))
  elseif outcome == "paused" then
    if (status.err or ""):match("^R:") then status.err = "" end
    log.info("task %s stopped at a safe point", cfg.name)
  end
  status.state = "stopped"
  self:save()
end

-- mocdc task-worker ID [--state-dir DIR | --state-uri-file F]: exit 1 when the task stopped on an error.
function M.run(id, f)
  local st = state.open_flags(f)
  local cfg = get_json(st, key(id, "config"))
  if not cfg then errors.raise("no task with id " .. tostring(id), 2) end
  local w = setmetatable({ st = st, id = id, cfg = cfg, pid = util.getpid(),
    status = get_json(st, key(id, "status")) or {} }, Worker)
  if not w:register() then
    st:close()
    return 0
  end
  w.policy = retry.new({ maxRetries = cfg.max_retries })
  local outcome = w:loop(w:context())
  w:finish(outcome)
  st:close()
  return outcome == "failed" and 1 or 0
end

return M
