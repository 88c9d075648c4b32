-- mo_cdc-compatible task management:
--   mocdc task create|show|pause|resume|restart|drop   (flags and JSON of seed 002)
--   mocdc task-worker ID   (internal: the background process that runs one task)
--   mocdc serve            (runs every task of a state store in the foreground)
-- A task is a binlog (or snapshot) pipeline described by its flags; its
-- config, desired state and status live in the state store (mocdc.state);
-- its progress lives in the sink's watermark table under pipeline "task:<id>".
local cjson = require("cjson")
local errors = require("mocdc.errors")
local log = require("mocdc.log")
local state = require("mocdc.state")
local util = require("mocdc.util.lib")

local M = {}

M.HELP = [[
Manage CDC tasks (compatible with mo_cdc).

Usage:
  mocdc task create --task-name N --source-uri URI --sink-uri URI [--sink-type mysql|matrixone]
                    [--level account|database|table] [--account A] [--databases "db1:db2"]
                    [--tables "db.t:db2.t2,..."] [--no-full] [--start-ts TS] [--end-ts TS]
                    [--send-sql-timeout 10m] [--max-sql-length BYTES] [--exclude REGEX]
                    [--error-handle-option stop|ignore]
  mocdc task show    --source-uri URI [--all | --task-name N]
  mocdc task pause   --source-uri URI (--task-name N | --all)
  mocdc task resume  --source-uri URI --task-name N
  mocdc task restart --source-uri URI --task-name N
  mocdc task drop    --source-uri URI (--task-name N | --all)

Common flags:
  --state-dir DIR        local state store (default $MOCDC_HOME or ~/.mocdc)
  --state-uri URI        shared state store in a MySQL-protocol database
  --source-password-file F / --sink-password-file F   read passwords from files
  MOCDC_SOURCE_PASSWORD / MOCDC_SINK_PASSWORD           passwords from the environment
Timestamps (--start-ts/--end-ts) are "YYYY-MM-DD HH:MM:SS" in UTC.
]]

local BOOL = { ["no-full"] = true, all = true, help = true }

-- Parse --flag value / --flag=value into a table.
function M.parse_flags(args)
  local f, i = {}, 1
  while i <= #args do
    local a = args[i]
    local name, val = a:match("^%-%-([%w%-]+)=(.*)$")
    if not name then name = a:match("^%-%-([%w%-]+)$") end
    if a == "-h" then name = "help" end
    if not name then errors.raise(string.format("unexpected argument '%s' (flags are --name value)", a), 2) end
    if BOOL[name] then
      f[name] = val == nil or val == "true"
    elseif val == nil then
      val = args[i + 1]
      if val == nil then errors.raise(string.format("flag --%s needs a value", name), 2) end
      i = i + 1
      f[name] = val
    else
      f[name] = val
    end
    i = i + 1
  end
  return f
end

local function read_file_trim(path)
  local fh, err = io.open(path)
  if not fh then errors.raise("cannot read password file: " .. tostring(err), 2) end
  local s = fh:read("*a")
  fh:close()
  return (s:gsub("[\r\n]+$", ""))
end

-- Replace the URI's password (from env or file) — keeps secrets out of `ps`.
local function with_password(uri_s, pw)
  if not pw then return uri_s end
  local uri = require("mocdc.uri")
  local u, err = uri.parse(uri_s)
  if not u then errors.raise(err, 2) end
  u.password = pw
  return uri.format(u, { password = true })
end

local function source_password(f)
  if f["source-password-file"] then return read_file_trim(f["source-password-file"]) end
  local e = os.getenv("MOCDC_SOURCE_PASSWORD")
  return e ~= "" and e or nil
end

local function sink_password(f)
  if f["sink-password-file"] then return read_file_trim(f["sink-password-file"]) end
  local e = os.getenv("MOCDC_SINK_PASSWORD")
  return e ~= "" and e or nil
end

-- Tasks are visible to the user of --source-uri only (seed 002): owner = login@host:port.
local function owner_of(uri_s)
  local u, err = require("mocdc.uri").parse(uri_s)
  if not u then errors.raise(err, 2) end
  return string.format("%s@%s:%d", u.login or u.user or "", u.host, u.port)
end

local function open_state(f)
  return state.open({ state_dir = f["state-dir"], state_uri = f["state-uri"] })
end

local function get_json(st, k)
  local v = st:get(k)
  if v == nil then return nil end
  return cjson.decode(v)
end

local function all_tasks(st, owner)
  local out = {}
  for k, v in pairs(st:items("task/") or {}) do
    local id = k:match("^task/([^/]+)/config$")
    if id then
      local cfg = cjson.decode(v)
      if not owner or cfg.owner == owner then out[#out + 1] = cfg end
    end
  end
  table.sort(out, function(a, b) return a.id < b.id end)
  return out
end

local function find(st, owner, name)
  for _, cfg in ipairs(all_tasks(st, owner)) do
    if cfg.name == name then return cfg end
  end
  return nil
end

local function pid_alive(pid)
  return pid and pid > 0 and util.kill(pid, 0) ~= nil
end

-- The state a user sees, reconciled with the worker process.
function M.effective_status(st, cfg)
  local s = get_json(st, "task/" .. cfg.id .. "/status") or { state = "stopped", err = "" }
  local desired = st:get("task/" .. cfg.id .. "/desired") or "running"
  if s.state == "running" and not pid_alive(s.pid) then
    s.state = "stopped"
    if (s.err or "") == "" and desired == "running" then
      s.err = string.format("worker process %s exited unexpectedly; run mocdc task resume or mocdc serve", tostring(s.pid))
    end
  end
  return s, desired
end

-- Go-style timestamp like the seed's: 2024-10-29 16:43:00.318404 +0000 UTC
local function go_time(t)
  local sec = math.floor(t)
  return os.date("!%Y-%m-%d %H:%M:%S", sec) .. string.format(".%06d +0000 UTC", math.floor((t - sec) * 1e6))
end
M.go_time = go_time

-- JSON with the seed's key order and indentation.
local FIELDS = { "task-id", "task-name", "source-uri", "sink-uri", "state", "err-msg", "checkpoint", "timestamp" }
function M.encode_show(list)
  if #list == 0 then return "[]" end
  local parts = {}
  for _, obj in ipairs(list) do
    local lines = {}
    for _, k in ipairs(FIELDS) do
      lines[#lines + 1] = "    " .. cjson.encode(k) .. ": " .. cjson.encode(obj[k])
    end
    parts[#parts + 1] = "  {\n" .. table.concat(lines, ",\n") .. "\n  }"
  end
  return "[\n" .. table.concat(parts, ",\n") .. "\n]"
end

function M.show_entry(st, cfg)
  local s = M.effective_status(st, cfg)
  local names = {}
  for tname in pairs(s.checkpoint or {}) do names[#names + 1] = tname end
  table.sort(names)
  local cp = { "{\n" }
  for _, n in ipairs(names) do cp[#cp + 1] = string.format("  %q: %s,\n", n, go_time(s.checkpoint[n])) end
  cp[#cp + 1] = "}"
  local err = s.err or ""
  if (s.dead_letters or 0) > 0 then
    err = (err ~= "" and (err .. "; ") or "") .. string.format("ignored %d failing row(s), recorded in %s",
      s.dead_letters, tostring(s.dead_letter_path))
  end
  return {
    ["task-id"] = cfg.id, ["task-name"] = cfg.name,
    ["source-uri"] = log.mask(cfg.source_uri), ["sink-uri"] = log.mask(cfg.sink_uri),
    state = s.state, ["err-msg"] = log.mask(err), checkpoint = table.concat(cp), timestamp = go_time(util.now()),
  }
end

local function spawn_worker(f, cfg)
  local dir = state.dir({ state_dir = f["state-dir"] })
  util.mkdir_p(dir .. "/logs")
  local argv = { util.exe_path(), "task-worker", cfg.id }
  if f["state-uri"] then argv[#argv + 1] = "--state-uri"; argv[#argv + 1] = f["state-uri"] end
  if f["state-dir"] then argv[#argv + 1] = "--state-dir"; argv[#argv + 1] = f["state-dir"] end
  local logpath = dir .. "/logs/" .. cfg.name:gsub("[^%w_.-]", "_") .. ".log"
  local ok, err = util.spawn(argv, logpath)
  if not ok then errors.raise("cannot start the task worker: " .. tostring(err)) end
  return logpath
end

-- Wait until the worker reports running (or stopped with an error).
local function wait_started(st, cfg, timeout)
  local deadline = util.mono() + (timeout or 15)
  while util.mono() < deadline do
    local s = get_json(st, "task/" .. cfg.id .. "/status")
    if s and s.state == "running" and pid_alive(s.pid) then return true end
    if s and s.state == "stopped" and s.started and (s.err or "") ~= "" then return false, s.err end
    util.sleep(0.05)
  end
  return false, "the task worker did not report within " .. (timeout or 15) .. " s (see its log)"
end

-- Ask the worker to stop at a safe point and wait for it.
local function stop_worker(st, cfg, timeout)
  local s = get_json(st, "task/" .. cfg.id .. "/status")
  if s and pid_alive(s.pid) then
    util.kill(s.pid, 15)
    local deadline = util.mono() + (timeout or 30)
    while pid_alive(s.pid) and util.mono() < deadline do util.sleep(0.05) end
    if pid_alive(s.pid) then
      util.kill(s.pid, 9)
      util.sleep(0.1)
    end
  end
end

local function parse_duration(name, v)
  if v == nil then return nil end
  local n, unit = tostring(v):match("^(%d+%.?%d*)(%a*)$")
  local mult = ({ [""] = 1, s = 1, m = 60, h = 3600, ms = 0.001 })[unit or ""]
  if not n or not mult then
    errors.raise(string.format("--%s '%s' is not a duration (e.g. 30s, 10m, 1h)", name, tostring(v)), 2)
  end
  return tonumber(n) * mult
end

-- Build the pipeline job of a task.
function M.job_of(cfg)
  local so = {
    uri = cfg.source_uri, tables = cfg.tables, exclude = cfg.exclude, noFull = cfg.no_full,
    startTs = cfg.start_ts, endTs = cfg.end_ts,
  }
  if cfg.level == "database" and not cfg.tables then so.databases = cfg.databases end
  local stream = require("mocdc.stream")
  return {
    stream = stream.new({ kind = "binlog", opts = so }),
    target = cfg.sink_uri,
    opts = { sinkType = cfg.sink_type == "matrixone" and "matrixone" or nil, maxSqlLength = cfg.max_sql_length,
      sendSqlTimeout = cfg.send_sql_timeout, errorHandleOption = cfg.error_handle_option,
      checkpointLocation = cfg.checkpoint_dir, deadLetter = cfg.dead_letter },
  }
end

function M.validate(cfg)
  local conn = require("mocdc.conn")
  local src, err = conn.open(cfg.source_uri, { role = "source" })
  if not src then errors.raise(err) end
  local ok, e = pcall(function()
    if src.flavour == "matrixone" then
      errors.raise("source " .. src.label .. " is MatrixOne: the MatrixOne (snapshot-diff) source is not yet supported by this build")
    end
    local tables = require("mocdc.tables")
    local so = M.job_of(cfg).stream.source.opts
    local list = tables.resolve(src, so, src.label)
    local schema = require("mocdc.schema")
    for _, t in ipairs(list) do
      local key = schema.primary_key(src, t.src_db, t.src_table)
      if #key == 0 then
        io.stderr:write(string.format("mocdc: warning: %s.%s has no primary key; deletes match all columns (LIMIT 1)\n",
          t.src_db, t.src_table))
      end
    end
    local sink, serr = conn.open(cfg.sink_uri, { role = "sink" })
    if not sink then errors.raise(serr) end
    sink:close()
  end)
  src:close()
  if not ok then error(e, 0) end
end

function M.create(f)
  local name = f["task-name"]
  if not name or name == "" then errors.raise("task create needs --task-name", 2) end
  if not f["source-uri"] then errors.raise("task create needs --source-uri", 2) end
  if not f["sink-uri"] then errors.raise("task create needs --sink-uri", 2) end
  local sink_type = f["sink-type"] or "mysql"
  if sink_type ~= "mysql" and sink_type ~= "matrixone" then
    errors.raise(string.format("--sink-type '%s' is not supported (mysql or matrixone)", sink_type), 2)
  end
  local level = f.level or (f.tables and "table") or (f.databases and "database") or "account"
  if level ~= "account" and level ~= "database" and level ~= "table" then
    errors.raise(string.format("--level '%s' must be account, database or table", level), 2)
  end
  if level == "table" and not f.tables then errors.raise("--level table needs --tables \"db.t:db2.t2,...\"", 2) end
  if level == "database" and not f.databases and not f.tables then
    errors.raise("--level database needs --databases \"db1:db2\"", 2)
  end
  if f.account and f.account ~= "sys" then
    -- accounts exist only on MatrixOne; the source flavour is checked below
    errors.raise(string.format("--account '%s': accounts exist only on MatrixOne sources; omit it or use sys", f.account), 2)
  end
  local eh = f["error-handle-option"] or "stop"
  if eh ~= "stop" and eh ~= "ignore" then
    errors.raise(string.format("--error-handle-option '%s' must be stop or ignore", eh), 2)
  end
  local cdc = require("mocdc.cdc")
  local sts, ets = cdc.parse_ts("--start-ts", f["start-ts"]), cdc.parse_ts("--end-ts", f["end-ts"])
  if sts and sts >= util.now() then errors.raise("--start-ts must be earlier than the current time", 2) end
  if sts and ets and ets <= sts then errors.raise("--end-ts must be later than --start-ts", 2) end
  local msl = f["max-sql-length"]
  if msl and (not tonumber(msl) or tonumber(msl) < 1024) then
    errors.raise(string.format("--max-sql-length '%s' is not a byte count >= 1024", msl), 2)
  end
  if f.exclude then
    local re, rerr = require("mocdc.regex").compile(f.exclude)
    if not re then errors.raise("--exclude: " .. rerr, 2) end
  end
  local source_uri = with_password(f["source-uri"], source_password(f))
  local sink_uri = with_password(f["sink-uri"], sink_password(f))
  local st = open_state(f)
  local owner = owner_of(f["source-uri"])
  if find(st, owner, name) then
    st:close()
    errors.raise(string.format("task '%s' already exists (mocdc task show --task-name %s)", name, name), 2)
  end
  local cfg = {
    id = util.uuid7(), name = name, owner = owner, source_uri = source_uri, sink_uri = sink_uri,
    sink_type = sink_type, level = level, account = f.account, databases = f.databases, tables = f.tables,
    no_full = f["no-full"] and true or false, start_ts = f["start-ts"], end_ts = f["end-ts"],
    send_sql_timeout = parse_duration("send-sql-timeout", f["send-sql-timeout"]),
    max_sql_length = msl and tonumber(msl), exclude = f.exclude, error_handle_option = eh, created = util.now(),
  }
  local dir = state.dir({ state_dir = f["state-dir"] })
  cfg.checkpoint_dir = dir .. "/tasks/" .. cfg.id
  cfg.dead_letter = dir .. "/tasks/" .. cfg.id .. "/dead_letter.jsonl"
  M.validate(cfg)
  st:set_many({ ["task/" .. cfg.id .. "/config"] = cjson.encode(cfg), ["task/" .. cfg.id .. "/desired"] = "running" })
  local logpath = spawn_worker(f, cfg)
  local ok, err = wait_started(st, cfg)
  st:close()
  if not ok then errors.raise(string.format("task '%s' was created but stopped: %s (log: %s)", name, err, logpath)) end
  io.stderr:write(string.format("task '%s' created (task-id %s), running in the background; log: %s\n", name, cfg.id, logpath))
  return 0
end

local function select_tasks(st, f, need_name_or_all)
  if not f["source-uri"] then errors.raise("--source-uri is required (tasks are listed per source user)", 2) end
  local owner = owner_of(f["source-uri"])
  if f["task-name"] then
    local cfg = find(st, owner, f["task-name"])
    if not cfg then
      errors.raise(string.format("no task named '%s' for %s (mocdc task show --all --source-uri ...)", f["task-name"],
        log.mask(f["source-uri"])), 2)
    end
    return { cfg }
  end
  if f.all or not need_name_or_all then return all_tasks(st, owner) end
  errors.raise("give --task-name NAME or --all", 2)
end

function M.show(f)
  local st = open_state(f)
  local list = select_tasks(st, f, false)
  local out = {}
  for _, cfg in ipairs(list) do out[#out + 1] = M.show_entry(st, cfg) end
  st:close()
  print(M.encode_show(out))
  return 0
end

function M.pause(f)
  local st = open_state(f)
  for _, cfg in ipairs(select_tasks(st, f, true)) do
    st:set("task/" .. cfg.id .. "/desired", "paused")
    stop_worker(st, cfg)
    local s = get_json(st, "task/" .. cfg.id .. "/status") or {}
    s.state = "stopped"
    st:set("task/" .. cfg.id .. "/status", cjson.encode(s))
    io.stderr:write(string.format("task '%s' paused\n", cfg.name))
  end
  st:close()
  return 0
end

local function start(f, cfg, st, fresh)
  local s = get_json(st, "task/" .. cfg.id .. "/status") or {}
  if s.state == "running" and pid_alive(s.pid) then
    errors.raise(string.format("task '%s' is running; pause it first", cfg.name), 2)
  end
  s.state, s.err, s.started = "starting", "", nil
  if fresh then s.checkpoint = {} s.dead_letters = 0 end
  st:set_many({ ["task/" .. cfg.id .. "/desired"] = "running", ["task/" .. cfg.id .. "/status"] = cjson.encode(s) })
  local logpath = spawn_worker(f, cfg)
  local ok, err = wait_started(st, cfg)
  if not ok then errors.raise(string.format("task '%s' stopped: %s (log: %s)", cfg.name, err, logpath)) end
end

function M.resume(f)
  local st = open_state(f)
  for _, cfg in ipairs(select_tasks(st, f, true)) do
    start(f, cfg, st, false)
    io.stderr:write(string.format("task '%s' resumed\n", cfg.name))
  end
  st:close()
  return 0
end

-- Remove a task's progress: watermark rows in the sink and local checkpoints.
local function discard_progress(cfg)
  local sinkmod = require("mocdc.sink.mysql")
  local ok, e = pcall(function()
    local sink = sinkmod.open(cfg.sink_uri, { pipeline = "task:" .. cfg.id })
    sink:delete_watermarks()
    sink:close()
  end)
  if not ok then errors.raise("cannot remove the task's watermark rows from the sink: " .. errors.message(e)) end
  os.execute("rm -rf '" .. cfg.checkpoint_dir:gsub("'", "") .. "'")
end

function M.restart(f)
  local st = open_state(f)
  for _, cfg in ipairs(select_tasks(st, f, true)) do
    st:set("task/" .. cfg.id .. "/desired", "paused")
    stop_worker(st, cfg)
    discard_progress(cfg)
    start(f, cfg, st, true)
    io.stderr:write(string.format("task '%s' restarted from a full copy\n", cfg.name))
  end
  st:close()
  return 0
end

function M.drop(f)
  local st = open_state(f)
  for _, cfg in ipairs(select_tasks(st, f, true)) do
    st:set("task/" .. cfg.id .. "/desired", "dropped")
    stop_worker(st, cfg)
    discard_progress(cfg)
    st:delete_prefix("task/" .. cfg.id .. "/")
    io.stderr:write(string.format("task '%s' dropped\n", cfg.name))
  end
  st:close()
  return 0
end

local RETRYABLE = { [1205] = true, [1213] = true, [2006] = true, [2013] = true, [2003] = true, [1043] = true,
  [2002] = true, [2055] = true, [1053] = true, [1927] = true }

function M.retryable(e)
  if type(e) == "table" and RETRYABLE[e.code] then return true end
  local m = (type(e) == "table" and type(e.msg) == "string") and e.msg or errors.message(e)
  for _, pat in ipairs({ "Lost connection", "server has gone away", "Can't connect", "Connection refused",
    "Server shutdown in progress", "Connection was killed", "Deadlock found", "Lock wait timeout",
    "cannot connect to", "Connection reset" }) do
    if m:find(pat, 1, true) then return true end
  end
  return false
end

-- The background worker of one task.
function M.worker(id, f)
  local st = open_state(f)
  local cfg = get_json(st, "task/" .. id .. "/config")
  if not cfg then errors.raise("no task with id " .. id, 2) end
  local status = get_json(st, "task/" .. id .. "/status") or {}
  status.state, status.pid, status.err, status.started = "running", util.getpid(), "", util.now()
  status.checkpoint = status.checkpoint or {}
  st:set("task/" .. id .. "/status", cjson.encode(status))
  log.info("task %s (%s) worker %d started", cfg.name, id, util.getpid())
  local last_poll, desired = 0, "running"
  local last_status = 0
  local ctx = { name = "task:" .. id, vars = {} }
  ctx.should_stop = function()
    local now = util.mono()
    if now - last_poll > 0.5 then
      last_poll = now
      desired = st:get("task/" .. id .. "/desired") or "dropped"
    end
    return desired ~= "running"
  end
  ctx.on_checkpoint = function(tables, pos)
    local now = util.now()
    for _, t in ipairs(tables) do status.checkpoint[t.src_label] = now end
    status.position = pos
    if util.mono() - last_status > 0.5 then
      last_status = util.mono()
      st:set("task/" .. id .. "/status", cjson.encode(status))
    end
  end
  ctx.on_dead_letter = function(n, path)
    status.dead_letters = (status.dead_letters or 0) + n
    status.dead_letter_path = path
    st:set("task/" .. id .. "/status", cjson.encode(status))
  end
  local attempt, backoff = 0, 0.2
  local rc = 0
  while true do
    local job = M.job_of(cfg)
    job.opts.onDeadLetter = ctx.on_dead_letter
    local ok, e = pcall(function()
      -- binlog when the source has a row binlog, else a one-shot snapshot copy
      local conn = require("mocdc.conn")
      local c, cerr = conn.open(cfg.source_uri, { role = "source" })
      if not c then errors.raise(cerr, 2003) end
      local r = c:query("SELECT @@log_bin, @@binlog_format")
      local flavour = c.flavour
      c:close()
      if flavour == "matrixone" then
        errors.raise("MatrixOne sources are not yet supported by this build (snapshot-diff source)")
      end
      if r and r[1] and tostring(r[1][1]) == "1" and tostring(r[1][2]):upper() == "ROW" then
        return require("mocdc.cdc").run(job, ctx, {})
      end
      job.stream.source.kind = "snapshot"
      require("mocdc.runner").run_snapshot(job, ctx, {})
      errors.raise("source has no row binlog: the full copy is done; continuous sync needs log_bin=ON and binlog_format=ROW")
    end)
    for _, t in pairs(status.checkpoint) do local _ = t end
    if ok or ctx.should_stop() or util.stop_requested() then
      if ok then log.info("task %s finished (end of requested range)", cfg.name) end
      break
    end
    if M.retryable(e) and attempt < 10 then
      attempt = attempt + 1
      status.err = string.format("R:%d:%s", attempt, log.mask(errors.message(e)))
      st:set("task/" .. id .. "/status", cjson.encode(status))
      log.warn("task %s: retry %d in %.1f s after: %s", cfg.name, attempt, backoff, errors.message(e))
      if not util.sleep(backoff) then break end
      backoff = math.min(backoff * 2, 30)
    else
      status.err = log.mask(errors.message(e))
      log.error("task %s stopped: %s", cfg.name, status.err)
      rc = 1
      break
    end
  end
  if rc == 0 then status.err = (status.err or ""):match("^R:") and "" or status.err end
  status.state = "stopped"
  if st:get("task/" .. id .. "/config") then st:set("task/" .. id .. "/status", cjson.encode(status)) end
  st:close()
  return rc
end

-- mocdc serve: run every task whose desired state is running, one worker
-- process each, restarting workers that die; SIGTERM pauses all at a safe
-- point (the workers get SIGTERM) and exits 0.
function M.serve(f)
  local st = open_state(f)
  log.info("mocdc serve: supervising tasks of %s", f["state-uri"] and log.mask(f["state-uri"]) or state.dir({ state_dir = f["state-dir"] }))
  while not util.stop_requested() do
    for _, cfg in ipairs(all_tasks(st, nil)) do
      local desired = st:get("task/" .. cfg.id .. "/desired") or "running"
      local s = get_json(st, "task/" .. cfg.id .. "/status") or {}
      if desired == "running" and not pid_alive(s.pid) and not (s.state == "stopped" and (s.err or "") ~= "" and not s.err:match("^R:")) then
        log.info("starting worker for task %s", cfg.name)
        s.state = "starting"
        st:set("task/" .. cfg.id .. "/status", cjson.encode(s))
        spawn_worker(f, cfg)
      end
    end
    util.sleep(1)
  end
  log.info("mocdc serve: stopping workers at a safe point")
  for _, cfg in ipairs(all_tasks(st, nil)) do stop_worker(st, cfg) end
  st:close()
  return 0
end

function M.main(args)
  local sub = args[1]
  local rest = {}
  for i = 2, #args do rest[#rest + 1] = args[i] end
  if sub == nil or sub == "help" or sub == "--help" or sub == "-h" then io.write(M.HELP) return sub and 0 or 2 end
  local f = M.parse_flags(rest)
  if f.help then io.write(M.HELP) return 0 end
  local fn = ({ create = M.create, show = M.show, pause = M.pause, resume = M.resume, restart = M.restart,
    drop = M.drop })[sub]
  if not fn then errors.raise(string.format("unknown task command '%s' (see mocdc task --help)", sub), 2) end
  return fn(f)
end

return M
