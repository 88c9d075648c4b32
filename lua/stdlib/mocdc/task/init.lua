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
local retry = require("mocdc.pipeline.retry")
local state = require("mocdc.task.state")
local util = require("mocdc.util.lib")

local M = {}

M.HELP = [[
Manage CDC tasks (compatible with mo_cdc).

Usage:
  mocdc task create --task-name N --source-uri URI --sink-uri URI [--sink-type mysql|matrixone]
                    [--level account|database|table] [--account A] [--databases "db1:db2"]
                    [--tables "db.t:db2.t2,..."] [--no-full] [--start-ts TS] [--end-ts TS]
                    [--send-sql-timeout 10m] [--max-sql-length BYTES] [--exclude REGEX]
                    [--error-handle-option stop|ignore] [--max-retries N]
  mocdc task show    --source-uri URI [--all | --task-name N]
  mocdc task pause   --source-uri URI (--task-name N | --all)
  mocdc task resume  --source-uri URI --task-name N
  mocdc task restart --source-uri URI --task-name N
  mocdc task drop    --source-uri URI (--task-name N | --all)

Common flags:
  --state-dir DIR        local state store (default $MOCDC_HOME or ~/.mocdc)
  --state-uri URI        shared state store in a MySQL-protocol database
  --state-uri-file F     the same, read from a file (keeps its password out of ps)
  --source-password-file F / --sink-password-file F   read passwords from files
  MOCDC_SOURCE_PASSWORD / MOCDC_SINK_PASSWORD           passwords from the environment
Timestamps (--start-ts/--end-ts) are "YYYY-MM-DD HH:MM:SS" in UTC; after --end-ts the task stops by itself.
A password file always wins; the environment only fills a URI without a password.
restart discards the task's progress, empties its sink tables and copies them again.
--error-handle-option ignore skips rows the sink refuses and records each one in
<state-dir>/tasks/<task-id>/dead_letter.jsonl; task show counts them in err-msg.
Transient errors (lost connection, server restarting, lock wait timeout, deadlock) are retried
after 200 ms doubling to 30 s, at most --max-retries times in a row (default 10); then the task stops.
]]

local BOOL = { ["no-full"] = true, all = true, help = true }

-- Flags each command accepts (anything else is refused, so a typo never
-- silently changes what a task does).
local COMMON = { "state-dir", "state-uri", "state-uri-file", "help", "source-password-file", "sink-password-file" }
local ALLOWED = {
  create = { "task-name", "source-uri", "sink-uri", "sink-type", "level", "account", "databases", "tables",
    "no-full", "start-ts", "end-ts", "send-sql-timeout", "max-sql-length", "exclude", "error-handle-option",
    "max-retries" },
  show = { "source-uri", "all", "task-name" },
  pause = { "source-uri", "all", "task-name" },
  resume = { "source-uri", "task-name" },
  restart = { "source-uri", "task-name" },
  drop = { "source-uri", "all", "task-name" },
}

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
      if val ~= nil and val ~= "true" and val ~= "false" then
        errors.raise(string.format("flag --%s takes no value (or =true/=false), got '%s'", name, val), 2)
      end
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

local function check_flags(sub, f)
  local ok = {}
  for _, n in ipairs(COMMON) do ok[n] = true end
  for _, n in ipairs(ALLOWED[sub] or {}) do ok[n] = true end
  local names = {}
  for k in pairs(f) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    if not ok[k] then
      errors.raise(string.format("task %s does not take --%s (see mocdc task --help)", sub, k), 2)
    end
  end
end

local function read_file_trim(flag, path)
  local fh, err = io.open(path)
  if not fh then errors.raise(string.format("--%s: cannot read password file: %s", flag, tostring(err)), 2) end
  local s = fh:read("*a")
  fh:close()
  return (s:gsub("[\r\n]+$", ""))
end

-- Put the password (from a file or the environment) into the URI — keeps
-- secrets out of `ps`. A password file always wins; the environment variable
-- only fills a URI that has no password of its own.
local function with_password(uri_s, pw_file, file_flag, env_name)
  local uri = require("mocdc.uri")
  local u, err = uri.parse(uri_s)
  if not u then errors.raise(err, 2) end
  local pw
  if pw_file then
    pw = read_file_trim(file_flag, pw_file)
  elseif u.password == nil or u.password == "" then
    local e = os.getenv(env_name)
    if e and e ~= "" then pw = e end
  end
  if pw == nil then return uri_s end
  u.password = pw
  return uri.format(u, { password = true })
end

-- Tasks are visible to the user of --source-uri only (seed 002): owner = login@host:port.
local function owner_of(uri_s)
  local u, err = require("mocdc.uri").parse(uri_s)
  if not u then errors.raise(err, 2) end
  return string.format("%s@%s:%d", u.login or u.user or "", u.host, u.port)
end

-- --state-uri, or --state-uri-file (a file holding the URI: keeps its
-- password out of `ps`; workers always get it this way).
local function state_uri_of(f)
  if f["state-uri-file"] then return read_file_trim("state-uri-file", f["state-uri-file"]) end
  return f["state-uri"]
end

local function open_state(f)
  return state.open({ state_dir = f["state-dir"], state_uri = state_uri_of(f) })
end

local function get_json(st, k)
  local v = st:get(k)
  if v == nil then return nil end
  local ok, t = pcall(cjson.decode, v)
  return ok and t or nil
end

local function key(id, what) return "task/" .. id .. "/" .. what end

local function all_tasks(st, owner)
  local out = {}
  local items, err = st:items("task/")
  if not items then errors.raise("cannot read the state store: " .. tostring(err)) end
  for k, v in pairs(items) do
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

local HOST = require("mocdc.pipeline.job").HOST

-- Is the worker a status names alive? A worker on another host (a shared
-- --state-uri store) cannot be checked from here: its own report stands.
local function remote(s) return s.host ~= nil and s.host ~= HOST end
local function status_alive(s, id)
  if remote(s) then return s.state == "running" end
  return worker_alive(s.pid, id)
end

-- A worker launched by create/resume/restart/serve has this long to register.
local LAUNCH_GRACE = 20

local function launching(s)
  return s.state == "starting" and (util.now() - (tonumber(s.launched) or 0)) < LAUNCH_GRACE
end

-- The state a user sees, reconciled with the worker process.
function M.effective_status(st, cfg)
  local s = get_json(st, key(cfg.id, "status")) or { state = "stopped", err = "" }
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
      -- cjson escapes '/', the seed's output does not
      lines[#lines + 1] = "    " .. cjson.encode(k) .. ": " .. (cjson.encode(obj[k]):gsub("\\/", "/"))
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
  for _, n in ipairs(names) do cp[#cp + 1] = string.format("  %s: %s,\n", cjson.encode(n), go_time(s.checkpoint[n])) end
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
  -- after an upgrade replaced the binary, /proc/self/exe reads "<path> (deleted)": run the new one
  local exe = util.exe_path():gsub(" %(deleted%)$", "")
  local argv = { exe, "task-worker", cfg.id }
  local su = state_uri_of(f)
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
-- and pause waits for it), then launch it.
local function launch(f, st, cfg, s)
  s = s or get_json(st, key(cfg.id, "status")) or {}
  s.state, s.launched, s.pid, s.host, s.finished = "starting", util.now(), nil, HOST, nil
  s.err = ""
  st:set(key(cfg.id, "status"), cjson.encode(s))
  return spawn_worker(f, cfg)
end

-- Wait until the worker reports running (or stopped).
local function wait_started(st, cfg, timeout)
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

-- Stop the worker of a task at a safe point and wait until it is gone. The
-- caller has already changed the desired state, so a worker being launched
-- right now sees it when it registers and exits by itself.
local STOP_TIMEOUT = 60
local function stop_worker(st, cfg, timeout)
  local deadline = util.mono() + (timeout or STOP_TIMEOUT)
  while true do
    local s = get_json(st, key(cfg.id, "status")) or {}
    if remote(s) and s.state == "running" then
      -- a worker on another host polls the desired state and stops by itself
      if util.mono() >= deadline then
        errors.raise(string.format("task '%s': its worker on host %s did not stop within %d s", cfg.name, s.host,
          timeout or STOP_TIMEOUT))
      end
      util.sleep(0.2)
    elseif worker_alive(s.pid, cfg.id) then
      util.kill(s.pid, 15)
      while worker_alive(s.pid, cfg.id) and util.mono() < deadline do util.sleep(0.05) end
      if worker_alive(s.pid, cfg.id) then
        log.warn("task %s: worker %d did not stop within %d s; killing it (the sink keeps the last committed " ..
          "watermark, nothing is lost)", cfg.name, s.pid, timeout or STOP_TIMEOUT)
        util.kill(s.pid, 9)
        local d2 = util.mono() + 5
        while worker_alive(s.pid, cfg.id) and util.mono() < d2 do util.sleep(0.05) end
      end
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
  if cfg.start_file then so.binlogFile, so.binlogFileOffset = cfg.start_file, cfg.start_pos end
  local stream = require("mocdc.pipeline.stream")
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
  local src, err, errno = conn.open(cfg.source_uri, { role = "source" })
  if not src then errors.open_failed(err, errno) end
  local ok, e = pcall(function()
    if src.flavour == "matrixone" then
      -- MatrixOne: snapshots + DATA BRANCH DIFF (engine/matrixone.lua), no binlog options
      if cfg.start_ts or cfg.end_ts then
        errors.raise("source " .. src.label .. " is MatrixOne: --start-ts/--end-ts are not supported for it by mocdc yet", 2)
      end
      return
    end
    local r = src:query("SELECT @@log_bin, @@binlog_format")
    if r and r[1] and tostring(r[1][1]) == "1" and tostring(r[1][2]):upper() == "ROW" then
      require("mocdc.engine.binlog").check_binlog_settings(src)
      if cfg.no_full and not cfg.start_ts and not cfg.start_file then
        -- --no-full: exactly the changes committed after `task create` returns
        local p = require("mocdc.engine.binlog").master_status(src)
        cfg.start_file, cfg.start_pos = p.file, p.pos
      end
    elseif cfg.no_full or cfg.start_ts or cfg.end_ts then
      errors.raise(string.format("source %s has no row binlog (log_bin=ON and binlog_format=ROW are needed): " ..
        "--no-full, --start-ts and --end-ts need one", src.label), 2)
    end
    local tables = require("mocdc.pipeline.tables")
    local so = M.job_of(cfg).stream.source.opts
    local list = tables.resolve(src, so, src.label)
    local schema = require("mocdc.schema")
    for _, t in ipairs(list) do
      local k = schema.primary_key(src, t.src_db, t.src_table)
      if #k == 0 then
        io.stderr:write(string.format("mocdc: warning: %s.%s has no primary key; deletes match all columns (LIMIT 1)\n",
          t.src_db, t.src_table))
      end
    end
    -- opening the sink as the worker will checks reachability and max-sql-length
    local sink = require("mocdc.sink.mysql").open(cfg.sink_uri, { pipeline = "task:" .. cfg.id,
      dialect = cfg.sink_type == "matrixone" and "matrixone" or nil, maxSqlLength = cfg.max_sql_length,
      sendSqlTimeout = cfg.send_sql_timeout, errorHandleOption = cfg.error_handle_option })
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
    errors.raise(string.format("--account '%s': accounts exist only on MatrixOne sources; omit it or use sys", f.account), 2)
  end
  local eh = f["error-handle-option"] or "stop"
  if eh ~= "stop" and eh ~= "ignore" then
    errors.raise(string.format("--error-handle-option '%s' must be stop or ignore", eh), 2)
  end
  local cdc = require("mocdc.engine.binlog")
  local sts, ets = cdc.parse_ts("--start-ts", f["start-ts"]), cdc.parse_ts("--end-ts", f["end-ts"])
  if sts and sts >= util.now() then errors.raise("--start-ts must be earlier than the current time", 2) end
  if sts and ets and ets <= sts then
    errors.raise(string.format("--end-ts '%s' must be later than --start-ts '%s'", f["end-ts"], f["start-ts"]), 2)
  end
  local msl = f["max-sql-length"]
  if msl and (not tonumber(msl) or tonumber(msl) < 1024 or tonumber(msl) ~= math.floor(tonumber(msl))) then
    errors.raise(string.format("--max-sql-length '%s' is not a byte count >= 1024", msl), 2)
  end
  if f.exclude then
    local re, rerr = require("mocdc.regex").compile(f.exclude)
    if not re then errors.raise("--exclude: " .. rerr, 2) end
  end
  local send_timeout = parse_duration("send-sql-timeout", f["send-sql-timeout"])
  local max_retries = f["max-retries"] and tonumber(f["max-retries"])
  if f["max-retries"] and (not max_retries or max_retries < 0 or max_retries ~= math.floor(max_retries)) then
    errors.raise(string.format("--max-retries '%s' is not a whole number >= 0", f["max-retries"]), 2)
  end
  local source_uri = with_password(f["source-uri"], f["source-password-file"], "source-password-file", "MOCDC_SOURCE_PASSWORD")
  local sink_uri = with_password(f["sink-uri"], f["sink-password-file"], "sink-password-file", "MOCDC_SINK_PASSWORD")
  local st = open_state(f)
  local owner = owner_of(f["source-uri"])
  if find(st, owner, name) then
    st:close()
    errors.raise(string.format("task '%s' already exists for %s (mocdc task show --task-name %s; drop it first to reuse the name)",
      name, owner, name), 2)
  end
  local cfg = {
    id = util.uuid7(), name = name, owner = owner, source_uri = source_uri, sink_uri = sink_uri,
    sink_type = sink_type, level = level, account = f.account, databases = f.databases, tables = f.tables,
    no_full = f["no-full"] and true or false, start_ts = f["start-ts"], end_ts = f["end-ts"],
    send_sql_timeout = send_timeout, max_retries = max_retries,
    max_sql_length = msl and tonumber(msl), exclude = f.exclude, error_handle_option = eh, created = util.now(),
  }
  local dir = state.dir({ state_dir = f["state-dir"] })
  cfg.checkpoint_dir = dir .. "/tasks/" .. cfg.id
  cfg.dead_letter = dir .. "/tasks/" .. cfg.id .. "/dead_letter.jsonl"
  local ok, verr = pcall(M.validate, cfg)
  if not ok then st:close() error(verr, 0) end
  st:set_many({ [key(cfg.id, "config")] = cjson.encode(cfg), [key(cfg.id, "desired")] = "running" })
  local logpath = launch(f, st, cfg, { checkpoint = {} })
  local started, err = wait_started(st, cfg)
  st:close()
  if not started then
    errors.raise(string.format("task '%s' was created but stopped: %s (log: %s; fix it, then mocdc task resume)",
      name, err, logpath))
  end
  io.stderr:write(string.format("task '%s' created (task-id %s), running in the background; log: %s\n", name, cfg.id, logpath))
  return 0
end

local function select_tasks(st, f, need_name_or_all)
  if not f["source-uri"] then errors.raise("--source-uri is required (tasks are listed per source user)", 2) end
  local owner = owner_of(f["source-uri"])
  if f["task-name"] then
    if f.all then errors.raise("give --task-name NAME or --all, not both", 2) end
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

-- Run fn(st) with the store, closing it whatever happens.
local function with_state(f, fn)
  local st = open_state(f)
  local ok, res = pcall(fn, st)
  st:close()
  if not ok then error(res, 0) end
  return res
end

function M.show(f)
  return with_state(f, function(st)
    local out = {}
    for _, cfg in ipairs(select_tasks(st, f, false)) do out[#out + 1] = M.show_entry(st, cfg) end
    print(M.encode_show(out))
    return 0
  end)
end

-- Apply fn to each selected task; with --all a failure on one task does not
-- stop the others (the first failure is reported after all were tried).
local function each_task(st, f, fn)
  local failed, first = 0, nil
  for _, cfg in ipairs(select_tasks(st, f, true)) do
    local ok, e = pcall(fn, cfg)
    if not ok then
      if not f.all then error(e, 0) end
      failed, first = failed + 1, first or e
    end
  end
  if first then
    errors.raise(string.format("%s%s", errors.message(first),
      failed > 1 and string.format(" (and %d more task(s) failed)", failed - 1) or ""))
  end
  return 0
end

function M.pause(f)
  return with_state(f, function(st)
    return each_task(st, f, function(cfg)
      st:set(key(cfg.id, "desired"), "paused")
      stop_worker(st, cfg)
      io.stderr:write(string.format("task '%s' paused\n", cfg.name))
    end)
  end)
end

local function start(f, cfg, st, fresh)
  local s = get_json(st, key(cfg.id, "status")) or {}
  if status_alive(s, cfg.id) or launching(s) then
    errors.raise(string.format("task '%s' is running; only a stopped task can be resumed (mocdc task pause first)", cfg.name), 2)
  end
  s.checkpoint = s.checkpoint or {}
  if fresh then s.checkpoint, s.dead_letters, s.dead_letter_path = {}, 0, nil end
  st:set(key(cfg.id, "desired"), "running")
  local logpath = launch(f, st, cfg, s)
  local ok, err = wait_started(st, cfg)
  if not ok then errors.raise(string.format("task '%s' stopped: %s (log: %s)", cfg.name, err, logpath)) end
end

function M.resume(f)
  return with_state(f, function(st)
    for _, cfg in ipairs(select_tasks(st, f, true)) do
      start(f, cfg, st, false)
      io.stderr:write(string.format("task '%s' resumed\n", cfg.name))
    end
    return 0
  end)
end

-- Remove a task's progress: its watermark rows in the sink, its local
-- checkpoints and dead letters; with clear_tables also the rows of its sink
-- tables (restart: the full copy must converge to the source, including rows
-- deleted at the source since).
local function discard_progress(cfg, clear_tables)
  local sinkmod = require("mocdc.sink.mysql")
  local ok, e = pcall(function()
    local sink = sinkmod.open(cfg.sink_uri, { pipeline = "task:" .. cfg.id })
    local ok2, e2 = pcall(function()
      if clear_tables then
        local schema = require("mocdc.schema")
        local src, serr = require("mocdc.conn").open(cfg.source_uri, { role = "source" })
        if not src then errors.raise(serr) end
        local okr, list = pcall(require("mocdc.pipeline.tables").resolve, src, M.job_of(cfg).stream.source.opts, src.label)
        src:close()
        if not okr then error(list, 0) end
        for _, t in ipairs(list) do
          if schema.table_exists(sink.c, t.dst_db, t.dst_table) then
            local q = schema.qname(t.dst_db, t.dst_table)
            if not sink.c:exec("TRUNCATE TABLE " .. q) then sink:exec("DELETE FROM " .. q, "clearing " .. q) end
          end
        end
      end
      sink:delete_watermarks()
    end)
    sink:close()
    if not ok2 then error(e2, 0) end
  end)
  if not ok then
    errors.raise(string.format("task '%s': cannot remove its progress from the sink (%s); the task is stopped — " ..
      "run the command again once the sink is reachable", cfg.name, errors.message(e)))
  end
  os.execute("rm -rf '" .. cfg.checkpoint_dir:gsub("'", "") .. "'")
end

function M.restart(f)
  return with_state(f, function(st)
    for _, cfg in ipairs(select_tasks(st, f, true)) do
      st:set(key(cfg.id, "desired"), "paused")
      stop_worker(st, cfg)
      discard_progress(cfg, not cfg.no_full and not cfg.start_ts)
      start(f, cfg, st, true)
      io.stderr:write(string.format("task '%s' restarted from a full copy\n", cfg.name))
    end
    return 0
  end)
end

function M.drop(f)
  return with_state(f, function(st)
    return each_task(st, f, function(cfg)
      st:set(key(cfg.id, "desired"), "dropped")
      stop_worker(st, cfg)
      discard_progress(cfg, false)
      local n, err = st:delete_prefix("task/" .. cfg.id .. "/")
      if not n then errors.raise(string.format("task '%s': cannot remove it from the state store: %s", cfg.name, tostring(err))) end
      io.stderr:write(string.format("task '%s' dropped\n", cfg.name))
    end)
  end)
end


-- The background worker of one task.
function M.worker(id, f)
  local st = open_state(f)
  local cfg = get_json(st, key(id, "config"))
  if not cfg then errors.raise("no task with id " .. tostring(id), 2) end
  local me = util.getpid()
  local function desired_now()
    local v, err = st:get(key(id, "desired"))
    if v == nil and err then return nil end -- store busy: unknown
    return v or "dropped"
  end
  local status = get_json(st, key(id, "status")) or {}
  -- never two workers for one task, never one the operator no longer wants
  if status.pid ~= me and status_alive(status, id) and status.state == "running" then
    log.warn("task %s: worker %d is already running it; exiting", cfg.name, status.pid)
    st:close()
    return 0
  end
  local function save()
    if st:get(key(id, "config")) then st:set(key(id, "status"), cjson.encode(status)) end
  end
  local desired = desired_now()
  if desired ~= "running" then
    log.info("task %s: not starting (desired state is %s)", cfg.name, tostring(desired))
    if status.state == "starting" then status.state = "stopped" save() end
    st:close()
    return 0
  end
  status.state, status.pid, status.host, status.err, status.started = "running", me, HOST, "", util.now()
  status.table_err = nil -- stopped tables are retried by a new worker
  status.launched, status.finished = nil, nil
  status.checkpoint = status.checkpoint or {}
  save()
  log.info("task %s (%s) worker %d started", cfg.name, id, me)
  local last_poll = util.mono()
  desired = desired_now() or "running" -- re-read after registering (a pause may have raced us)
  local function stop_wanted()
    if util.stop_requested() then return true end
    local now = util.mono()
    if now - last_poll > 0.5 then
      last_poll = now
      desired = desired_now() or desired
    end
    return desired ~= "running"
  end
  local policy = retry.new({ maxRetries = cfg.max_retries })
  local last_status = 0
  -- claims: this worker's retries claim the stream again only while nobody took it (runner.claim)
  local ctx = { name = "task:" .. id, vars = {}, claims = {} }
  ctx.should_stop = stop_wanted
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
      log.info("task %s: recovered after %d retr%s", cfg.name, n, n == 1 and "y" or "ies")
      status.err = status.table_err or ""
    end
    if recovered or util.mono() - last_status > 0.5 then
      last_status = util.mono()
      save()
    end
  end
  -- one table failed (not transient): it stops, the others go on (per-table errors)
  ctx.on_table_error = function(t, msg)
    local parts = { status.table_err }
    parts[#parts + 1] = string.format("N:%s:%s:%s", go_time(util.now()), t.src_label, log.mask(msg))
    status.table_err = table.concat(parts, "; ")
    status.err = status.table_err
    save()
  end
  ctx.on_dead_letter = function(n, path)
    status.dead_letters = (status.dead_letters or 0) + n
    status.dead_letter_path = path
    save()
  end
  local outcome
  while true do
    local job = M.job_of(cfg)
    job.opts.onDeadLetter = ctx.on_dead_letter
    local ok, e = pcall(function()
      -- binlog when the source has a row binlog, else a one-shot snapshot copy
      local conn = require("mocdc.conn")
      local c, cerr, cerrno, cstate = conn.open(cfg.source_uri, { role = "source" })
      if not c then errors.open_failed(cerr, cerrno, nil, cstate) end
      local r, rerr, rerrno, rstate = c:query("SELECT @@log_bin, @@binlog_format")
      local flavour = c.flavour
      c:close()
      if not r and flavour ~= "matrixone" then
        errors.raise_sql(string.format("source %s: reading its binlog settings failed: %s", c.label, tostring(rerr)),
          rerrno, rstate)
      end
      if flavour == "matrixone" then
        -- snapshots + DATA BRANCH DIFF every second (MatrixOne's own CDC polls at 200 ms)
        job.stream.source.kind = "matrixone"
        job.opts.duration = job.opts.duration or 1
        return require("mocdc.engine.matrixone").run(job, ctx, {})
      end
      if r and r[1] and tostring(r[1][1]) == "1" and tostring(r[1][2]):upper() == "ROW" then
        return require("mocdc.engine.binlog").run(job, ctx, {})
      end
      -- no row binlog: full copy, then chunk-checksum diff iterations
      job.stream.source.kind = "snapshot"
      job.opts.duration = job.opts.duration or 2
      return require("mocdc.engine.snapdiff").run(job, ctx, {})
    end)
    if stop_wanted() then
      outcome = "paused"
      break
    end
    if ok then
      outcome = "finished"
      break
    end
    local msg = log.mask(errors.message(e))
    local delay = policy:failed(e)
    if delay then
      -- MatrixOne's form: R:<count>:<first>:<last>:<msg>
      status.err = string.format("R:%d:%s:%s:%s", policy.attempt, go_time(policy.first), go_time(util.now()), msg)
      save()
      log.warn("task %s: retry %d/%d in %.1f s after: %s", cfg.name, policy.attempt, policy.limit, delay, msg)
      if not retry.wait(delay, stop_wanted) then
        outcome = "paused"
        break
      end
    else
      if policy.attempt > 0 and errors.retryable(e) then
        msg = string.format("%s; still failing after %d retries over %.0f s (maxRetries = %d)", msg, policy.attempt,
          util.now() - policy.first, policy.limit)
      end
      status.err = msg
      outcome = "failed"
      log.error("task %s stopped: %s", cfg.name, msg)
      break
    end
  end
  if outcome == "finished" then
    status.err, status.finished = "", true
    log.info("task %s finished: reached the end of the requested range (--end-ts %s)", cfg.name, tostring(cfg.end_ts))
  elseif outcome == "paused" then
    if (status.err or ""):match("^R:") then status.err = "" end
    log.info("task %s stopped at a safe point", cfg.name)
  end
  status.state = "stopped"
  save()
  st:close()
  return outcome == "failed" and 1 or 0
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

function M.serve(f)
  if f.help then io.write(M.SERVE_HELP) return 0 end
  -- other flags are not refused here: `mocdc serve` is shared with the subscription executor
  local st = open_state(f)
  log.info("mocdc serve: supervising the tasks of %s",
    f["state-uri"] and log.mask(f["state-uri"]) or state.dir({ state_dir = f["state-dir"] }))
  while not util.stop_requested() do
    -- one pass over the tasks; a failing pass (store unreachable for a moment) is logged and retried
    local okp, perr = pcall(function()
      for _, cfg in ipairs(all_tasks(st, nil)) do
        local desired = st:get(key(cfg.id, "desired")) or "running"
        local s = get_json(st, key(cfg.id, "status")) or {}
        local failed = (s.err or "") ~= "" and not s.err:match("^R:") and s.state == "stopped"
        if desired == "running" and not status_alive(s, cfg.id) and not launching(s) and not s.finished
          and not failed then
          log.info("starting the worker of task %s", cfg.name)
          launch(f, st, cfg, s)
        end
      end
    end)
    if not okp then log.warn("mocdc serve: %s (retrying)", errors.message(perr)) end
    util.sleep(1)
  end
  log.info("mocdc serve: stopping the workers at a safe point")
  util.clear_stop()
  local rc = 0
  for _, cfg in ipairs(all_tasks(st, nil)) do
    local okw, werr = pcall(stop_worker, st, cfg)
    if not okw then
      log.error("mocdc serve: %s", errors.message(werr))
      rc = 1
    end
  end
  st:close()
  log.info("mocdc serve: stopped")
  return rc
end

function M.main(args)
  local sub = args[1]
  local rest = {}
  for i = 2, #args do rest[#rest + 1] = args[i] end
  if sub == nil or sub == "help" or sub == "--help" or sub == "-h" then io.write(M.HELP) return sub and 0 or 2 end
  local fn = ({ create = M.create, show = M.show, pause = M.pause, resume = M.resume, restart = M.restart,
    drop = M.drop })[sub]
  if not fn then errors.raise(string.format("unknown task command '%s' (see mocdc task --help)", sub), 2) end
  local f = M.parse_flags(rest)
  if f.help then io.write(M.HELP) return 0 end
  check_flags(sub, f)
  return fn(f)
end

return M
