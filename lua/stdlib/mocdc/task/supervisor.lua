-- The task workers' supervisor: launches one worker process per task
-- (`mocdc task-worker ID`, detached, its log under <state-dir>/logs), tells a
-- live worker from a dead one, stops it at a safe point, reconciles the
-- stored status with the process (what `task show` prints), and
-- `mocdc serve`, which keeps every task whose desired state is running
-- running. The worker itself is task/worker.lua.
local cjson = require("cjson")
local errors = require("mocdc.errors")
local log = require("mocdc.log")
local HOST = require("mocdc.pipeline.job").HOST
local state = require("mocdc.task.state")
local util = require("mocdc.util.lib")

local M = {}

local key, get_json = state.key, state.get_json

local function read_proc(pid, what)
  local fh = io.open("/proc/" .. pid .. "/" .. what, "rb")
  if not fh then return nil end
  local s = fh:read("*a")
  fh:close()
  return s
end

-- Is `pid` the (live, not zombie) worker of task `id`? A pid recorded in the
-- state store may have exited and been reused by an unrelated process: on
-- Linux /proc tells them apart, so a stale pid is never shown as running and
-- never signalled.
local function worker_alive(pid, id)
  pid = tonumber(pid)
  if not pid or pid <= 0 or util.kill(pid, 0) == nil then return false end
  local stat = read_proc(pid, "stat")
  if stat then
    local stc = stat:match("^%d+ %b() (%a)")
    if stc == "Z" or stc == "X" then return false end
    local cmd = read_proc(pid, "cmdline")
    if cmd and id and not cmd:find("task-worker\0" .. id, 1, true) then return false end
  end
  return true
end
M.worker_alive = worker_alive

-- Is the worker a status names alive? A worker on another host (a shared
-- --state-uri store) cannot be checked from here: its own report stands.
local function remote(s) return s.host ~= nil and s.host ~= HOST end
local function status_alive(s, id)
  if remote(s) then return s.state == "running" end
  return worker_alive(s.pid, id)
end
M.status_alive = status_alive

-- A worker launched by create/resume/restart/serve has this long to register.
local LAUNCH_GRACE = 20

local function launching(s)
  return s.state == "starting" and (util.now() - (tonumber(s.launched) or 0)) < LAUNCH_GRACE
end
M.launching = launching

-- The stored status of a task (nil: none yet). A worker writes its last
-- status (stopped, and why) and then exits: a status read just before that
-- write names a worker that is gone by the time it is checked. So a running
-- status whose worker is gone is read again; what a gone worker left is its
-- last word (still running: it died without saying so).
function M.status(st, id)
  local s = get_json(st, key(id, "status"))
  if s and s.state == "running" and not status_alive(s, id) then
    s = get_json(st, key(id, "status")) or s
  end
  return s
end

-- The state a user sees, reconciled with the worker process.
function M.effective_status(st, cfg)
  local s = M.status(st, cfg.id) or { state = "stopped", err = "" }
  local desired = st:get(key(cfg.id, "desired")) or "running"
  s.err = s.err or ""
  if s.state == "starting" then
    if launching(s) and desired == "running" then
      s.state = "running"
    else
      s.state = "stopped"
      if s.err == "" and desired == "running" then
        s.err = "the task worker did not start; see its log under the state directory, then run mocdc task resume"
      end
    end
  elseif s.state == "running" and not status_alive(s, cfg.id) then
    s.state = "stopped"
    if (s.err == "" or s.err:match("^R:")) and desired == "running" then
      s.err = string.format("worker process %s exited unexpectedly; run mocdc task resume or mocdc serve", tostring(s.pid))
    end
  elseif s.state ~= "running" then
    s.state = "stopped"
  end
  return s, desired
end

local function spawn_worker(f, cfg)
  local dir = state.dir({ state_dir = f["state-dir"] })
  util.mkdir_p(dir .. "/logs")
  -- after an upgrade replaced the binary, /proc/self/exe reads "<path> (deleted)": run the new one
  local exe = util.exe_path():gsub(" %(deleted%)$", "")
  local argv = { exe, "task-worker", cfg.id }
  local su = state.uri_of(f)
  if su then
    local path = dir .. "/state-uri"
    os.execute("umask 077 && : > '" .. path:gsub("'", "'\\''") .. "'")
    local fh = io.open(path, "w")
    if not fh then errors.raise("cannot write " .. path) end
    fh:write(su, "\n")
    fh:close()
    argv[#argv + 1] = "--state-uri-file"; argv[#argv + 1] = path
  end
  if f["state-dir"] then argv[#argv + 1] = "--state-dir"; argv[#argv + 1] = f["state-dir"] end
  local logpath = dir .. "/logs/" .. cfg.name:gsub("[^%w_.-]", "_") .. ".log"
  local ok, err = util.spawn(argv, logpath)
  if not ok then errors.raise("cannot start the task worker: " .. tostring(err)) end
  return logpath
end

-- Record that a worker is being launched (so nobody launches a second one,
-- and pause waits for it), then launch it. Returns its log's path.
function M.launch(f, st, cfg, s)
  s = s or get_json(st, key(cfg.id, "status")) or {}
  s.state, s.launched, s.pid, s.host, s.finished = "starting", util.now(), nil, HOST, nil
  s.err = ""
  st:set(key(cfg.id, "status"), cjson.encode(s))
  return spawn_worker(f, cfg)
end

-- Wait until the worker reports running (or stopped): true, or false and why.
function M.wait_started(st, cfg, timeout)
  local deadline = util.mono() + (timeout or LAUNCH_GRACE)
  while util.mono() < deadline do
    local s = get_json(st, key(cfg.id, "status"))
    if s and s.state == "running" and status_alive(s, cfg.id) then return true end
    if s and s.state == "stopped" then
      if (s.err or "") ~= "" then return false, s.err end
      return true
    end
    util.sleep(0.05)
  end
  return false, "the task worker did not report within " .. (timeout or LAUNCH_GRACE) .. " s"
end

-- SIGTERM, and SIGKILL when the worker has not stopped by the deadline.
local function terminate(cfg, pid, deadline, timeout)
  util.kill(pid, 15)
  while worker_alive(pid, cfg.id) and util.mono() < deadline do util.sleep(0.05) end
  if worker_alive(pid, cfg.id) then
    log.warn("task %s: worker %d did not stop within %d s; killing it (the sink keeps the last committed " ..
      "watermark, nothing is lost)", cfg.name, pid, timeout)
    util.kill(pid, 9)
    local d2 = util.mono() + 5
    while worker_alive(pid, cfg.id) and util.mono() < d2 do util.sleep(0.05) end
  end
end

-- Stop the worker of a task at a safe point and wait until it is gone. The
-- caller has already changed the desired state, so a worker being launched
-- right now sees it when it registers and exits by itself.
local STOP_TIMEOUT = 60
function M.stop(st, cfg, timeout)
  timeout = timeout or STOP_TIMEOUT
  local deadline = util.mono() + timeout
  while true do
    local s = M.status(st, cfg.id) or {}
    if remote(s) and s.state == "running" then
      -- a worker on another host polls the desired state and stops by itself
      if util.mono() >= deadline then
        errors.raise(string.format("task '%s': its worker on host %s did not stop within %d s", cfg.name, s.host,
          timeout))
      end
      util.sleep(0.2)
    elseif worker_alive(s.pid, cfg.id) then
      terminate(cfg, s.pid, deadline, timeout)
    elseif launching(s) and util.mono() < deadline then
      util.sleep(0.05)
    else
      -- gone: make the stored state say so (a killed worker could not)
      if s.state ~= nil and s.state ~= "stopped" and st:get(key(cfg.id, "config")) then
        s.state = "stopped"
        st:set(key(cfg.id, "status"), cjson.encode(s))
      end
      return
    end
  end
end

-- mocdc serve: run every task whose desired state is running, one worker
-- process each, restarting workers that die; SIGTERM pauses all at a safe
-- point (the workers get SIGTERM) and exits 0. The desired states are kept, so
-- the next `mocdc serve` runs the same tasks again.
M.SERVE_HELP = [[
Usage: mocdc serve [--state-dir DIR | --state-uri URI | --state-uri-file FILE]

Runs every task of the state store whose desired state is running, one worker
process each, and restarts workers that die. SIGTERM (or SIGINT) pauses them at
a safe point and exits 0; the next `mocdc serve` runs the same tasks again.
]]

-- One pass over the tasks: launch a worker for each task that should run and
-- has none (not one that finished, nor one stopped by an error).
local function supervise(f, st)
  for _, cfg in ipairs(state.tasks(st, nil)) do
    local desired = st:get(key(cfg.id, "desired")) or "running"
    local s = M.status(st, cfg.id) or {}
    local failed = (s.err or "") ~= "" and not s.err:match("^R:") and s.state == "stopped"
    if desired == "running" and not status_alive(s, cfg.id) and not launching(s) and not s.finished
      and not failed then
      log.info("starting the worker of task %s", cfg.name)
      M.launch(f, st, cfg, s)
    end
  end
end

function M.serve(f)
  if f.help then io.write(M.SERVE_HELP) return 0 end
  -- other flags are not refused here: `mocdc serve` is shared with the subscription executor
  local st = state.open_flags(f)
  log.info("mocdc serve: supervising the tasks of %s",
    f["state-uri"] and log.mask(f["state-uri"]) or state.dir({ state_dir = f["state-dir"] }))
  while not util.stop_requested() do
    -- a failing pass (store unreachable for a moment) is logged and retried
    local okp, perr = pcall(supervise, f, st)
    if not okp then log.warn("mocdc serve: %s (retrying)", errors.message(perr)) end
    util.sleep(1)
  end
  log.info("mocdc serve: stopping the workers at a safe point")
  util.clear_stop()
  local rc = 0
  for _, cfg in ipairs(state.tasks(st, nil)) do
    local okw, werr = pcall(M.stop, st, cfg)
    if not okw then
      log.error("mocdc serve: %s", errors.message(werr))
      rc = 1
    end
  end
  st:close()
  log.info("mocdc serve: stopped")
  return rc
end

return M
