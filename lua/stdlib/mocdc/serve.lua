-- mocdc serve: one service for the subscriptions and the tasks.
--
-- With --state-uri URI: the subscriptions' executor and scanner
-- (mocdc.subscription.worker) on that downstream, and the supervisor of
-- `mocdc task` tasks (mocdc.task.supervisor) in the same process: the supervisor
-- runs as a coroutine resumed between jobs (its sleeps yield), so one service
-- runs both. Without --state-uri (or with --tasks-only=true) only tasks.
-- Flags: --lease S (30), --scan-interval S (5), --owner-id ID, --chunk-rows N,
-- --batch-size N, --leaf-rows N, --full-check-interval S, --tasks-only=true.
local errors = require("mocdc.errors")
local log = require("mocdc.log")
local sinkmod = require("mocdc.sink.mysql")
local subworker = require("mocdc.subscription.worker")
local supervisor = require("mocdc.task.supervisor")
local util = require("mocdc.util.lib")

local M = {}

function M.main(f)
  if f["tasks-only"] or not f["state-uri"] then return supervisor.serve(f) end
  local w = subworker.new(f)
  local sink = sinkmod.open(f["state-uri"], { pipeline = "sub", password = os.getenv("MOCDC_SINK_PASSWORD") })
  log.info("mocdc serve: subscriptions of %s, worker %s", w.c.label, w.owner)
  w:recover()
  -- the task supervisor, cooperatively
  local real_sleep = util.sleep
  local tasks_co, wake = nil, 0
  tasks_co = coroutine.create(function() return supervisor.serve(f) end)
  util.sleep = function(sec)
    if tasks_co and coroutine.running() == tasks_co then
      wake = util.mono() + (tonumber(sec) or 0)
      coroutine.yield()
      return not util.stop_requested()
    end
    return real_sleep(sec)
  end
  local function step_tasks()
    if not tasks_co then return end
    if coroutine.status(tasks_co) == "dead" then tasks_co = nil return end
    if util.mono() < wake then return end
    local ok, err = coroutine.resume(tasks_co)
    if not ok then
      log.error("mocdc serve: the task supervisor stopped: %s", errors.message(err))
      tasks_co = nil
    end
  end
  local next_scan = 0
  local ok, e = pcall(function()
    while not util.stop_requested() do
      step_tasks()
      if util.mono() >= next_scan then
        w:scan()
        next_scan = util.mono() + w.scan_every
      end
      local job = w:claim()
      if job then
        sink.pipeline = "sub:" .. job.task_id
        if job.took_over then log.info("subscription %s: taking over %s.%s (lease expired)", job.name, job.db, job.table) end
        w:run_job(job, sink)
      else
        real_sleep(0.2)
      end
    end
  end)
  -- let the task supervisor stop its workers at a safe point
  local deadline = util.mono() + 60
  while tasks_co and coroutine.status(tasks_co) ~= "dead" and util.mono() < deadline do
    step_tasks()
    real_sleep(0.05)
  end
  util.sleep = real_sleep
  sink:close()
  w:close()
  if not ok then
    if errors.is(e) and e.code == 130 then return 0 end
    error(e, 0)
  end
  return 0
end

return M
