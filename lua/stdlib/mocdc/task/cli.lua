-- mo_cdc-compatible task management, the commands:
--   mocdc task create|show|pause|resume|restart|drop   (flags and JSON of seed 002)
-- A task is a binlog (or snapshot) pipeline described by its flags; its
-- config, desired state and status live in the state store (task/state.lua);
-- its progress lives in the sink's watermark table under pipeline "task:<id>".
-- Its worker process (task/worker.lua) is launched, watched and stopped by
-- task/supervisor.lua.
local cjson = require("cjson")
local binlog = require("mocdc.engine.binlog")
local conn = require("mocdc.conn")
local errors = require("mocdc.errors")
local log = require("mocdc.log")
local regex = require("mocdc.regex")
local schema = require("mocdc.schema")
local sinkmod = require("mocdc.sink.mysql")
local state = require("mocdc.task.state")
local supervisor = require("mocdc.task.supervisor")
local tables = require("mocdc.pipeline.tables")
local uri = require("mocdc.uri")
local util = require("mocdc.util.lib")
local worker = require("mocdc.task.worker")

local M = {}

local key, go_time = state.key, state.go_time

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

-- Parse --flag value / --flag=value into a table (also the flags of
-- `mocdc task-worker` and `mocdc serve`).
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

-- Put the password (from a file or the environment) into the URI — keeps
-- secrets out of `ps`. A password file always wins; the environment variable
-- only fills a URI that has no password of its own.
local function with_password(uri_s, pw_file, file_flag, env_name)
  local u, err = uri.parse(uri_s)
  if not u then errors.raise(err, 2) end
  local pw
  if pw_file then
    pw = state.read_file_trim(file_flag, pw_file)
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
  local u, err = uri.parse(uri_s)
  if not u then errors.raise(err, 2) end
  return string.format("%s@%s:%d", u.login or u.user or "", u.host, u.port)
end

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
  local s = supervisor.effective_status(st, cfg)
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

local function parse_duration(name, v)
  if v == nil then return nil end
  local n, unit = tostring(v):match("^(%d+%.?%d*)(%a*)$")
  local mult = ({ [""] = 1, s = 1, m = 60, h = 3600, ms = 0.001 })[unit or ""]
  if not n or not mult then
    errors.raise(string.format("--%s '%s' is not a duration (e.g. 30s, 10m, 1h)", name, tostring(v)), 2)
  end
  return tonumber(n) * mult
end

-- The tables of a task, as its source lists them now.
local function task_tables(src, cfg)
  return tables.resolve(src, worker.job_of(cfg).stream.source.opts, src.label)
end

-- Check, with the source open, what the task's worker will need.
local function check_source(src, cfg)
  if src.flavour == "matrixone" then
    -- MatrixOne: snapshots + DATA BRANCH DIFF (engine/matrixone.lua), no binlog options
    if cfg.start_ts or cfg.end_ts then
      errors.raise("source " .. src.label .. " is MatrixOne: --start-ts/--end-ts are not supported for it by mocdc yet", 2)
    end
    return false
  end
  local r = src:query(worker.BINLOG_SETTINGS)
  if worker.row_binlog(r) then
    binlog.check_binlog_settings(src)
    if cfg.no_full and not cfg.start_ts and not cfg.start_file then
      -- --no-full: exactly the changes committed after `task create` returns
      local p = binlog.master_status(src)
      cfg.start_file, cfg.start_pos = p.file, p.pos
    end
  elseif cfg.no_full or cfg.start_ts or cfg.end_ts then
    errors.raise(string.format("source %s has no row binlog (log_bin=ON and binlog_format=ROW are needed): " ..
      "--no-full, --start-ts and --end-ts need one", src.label), 2)
  end
  for _, t in ipairs(task_tables(src, cfg)) do
    local k = schema.primary_key(src, t.src_db, t.src_table)
    if #k == 0 then
      io.stderr:write(string.format("mocdc: warning: %s.%s has no primary key; deletes match all columns (LIMIT 1)\n",
        t.src_db, t.src_table))
    end
  end
  return true
end

-- Check a new task against its endpoints (sets cfg.start_file/start_pos for --no-full).
function M.validate(cfg)
  local src, err, errno = conn.open(cfg.source_uri, { role = "source" })
  if not src then errors.open_failed(err, errno) end
  local ok, e = pcall(function()
    if not check_source(src, cfg) then return end
    -- opening the sink as the worker will checks reachability and max-sql-length
    local sink = sinkmod.open(cfg.sink_uri, { pipeline = "task:" .. cfg.id,
      dialect = cfg.sink_type == "matrixone" and "matrixone" or nil, maxSqlLength = cfg.max_sql_length,
      sendSqlTimeout = cfg.send_sql_timeout, errorHandleOption = cfg.error_handle_option })
    sink:close()
  end)
  src:close()
  if not ok then error(e, 0) end
end

-- The flags of task create that say what the task does, checked.
local function create_options(f)
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
  local sts, ets = binlog.parse_ts("--start-ts", f["start-ts"]), binlog.parse_ts("--end-ts", f["end-ts"])
  if sts and sts >= util.now() then errors.raise("--start-ts must be earlier than the current time", 2) end
  if sts and ets and ets <= sts then
    errors.raise(string.format("--end-ts '%s' must be later than --start-ts '%s'", f["end-ts"], f["start-ts"]), 2)
  end
  local msl = f["max-sql-length"]
  if msl and (not tonumber(msl) or tonumber(msl) < 1024 or tonumber(msl) ~= math.floor(tonumber(msl))) then
    errors.raise(string.format("--max-sql-length '%s' is not a byte count >= 1024", msl), 2)
  end
  if f.exclude then
    local re, rerr = regex.compile(f.exclude)
    if not re then errors.raise("--exclude: " .. rerr, 2) end
  end
  local send_timeout = parse_duration("send-sql-timeout", f["send-sql-timeout"])
  local max_retries = f["max-retries"] and tonumber(f["max-retries"])
  if f["max-retries"] and (not max_retries or max_retries < 0 or max_retries ~= math.floor(max_retries)) then
    errors.raise(string.format("--max-retries '%s' is not a whole number >= 0", f["max-retries"]), 2)
  end
  return {
    sink_type = sink_type, level = level, account = f.account, databases = f.databases, tables = f.tables,
    no_full = f["no-full"] and true or false, start_ts = f["start-ts"], end_ts = f["end-ts"],
    send_sql_timeout = send_timeout, max_retries = max_retries,
    max_sql_length = msl and tonumber(msl), exclude = f.exclude, error_handle_option = eh,
  }
end

function M.create(f)
  local name = f["task-name"]
  if not name or name == "" then errors.raise("task create needs --task-name", 2) end
  if not f["source-uri"] then errors.raise("task create needs --source-uri", 2) end
  if not f["sink-uri"] then errors.raise("task create needs --sink-uri", 2) end
  local cfg = create_options(f)
  local source_uri = with_password(f["source-uri"], f["source-password-file"], "source-password-file", "MOCDC_SOURCE_PASSWORD")
  local sink_uri = with_password(f["sink-uri"], f["sink-password-file"], "sink-password-file", "MOCDC_SINK_PASSWORD")
  local st = state.open_flags(f)
  local owner = owner_of(f["source-uri"])
  if state.find(st, owner, name) then
    st:close()
    errors.raise(string.format("task '%s' already exists for %s (mocdc task show --task-name %s; drop it first to reuse the name)",
      name, owner, name), 2)
  end
  cfg.id, cfg.name, cfg.owner, cfg.source_uri, cfg.sink_uri = util.uuid7(), name, owner, source_uri, sink_uri
  cfg.created = util.now()
  local dir = state.dir({ state_dir = f["state-dir"] })
  cfg.checkpoint_dir = dir .. "/tasks/" .. cfg.id
  cfg.dead_letter = dir .. "/tasks/" .. cfg.id .. "/dead_letter.jsonl"
  local ok, verr = pcall(M.validate, cfg)
  if not ok then st:close() error(verr, 0) end
  st:set_many({ [key(cfg.id, "config")] = cjson.encode(cfg), [key(cfg.id, "desired")] = "running" })
  local logpath = supervisor.launch(f, st, cfg, { checkpoint = {} })
  local started, err = supervisor.wait_started(st, cfg)
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
    local cfg = state.find(st, owner, f["task-name"])
    if not cfg then
      errors.raise(string.format("no task named '%s' for %s (mocdc task show --all --source-uri ...)", f["task-name"],
        log.mask(f["source-uri"])), 2)
    end
    return { cfg }
  end
  if f.all or not need_name_or_all then return state.tasks(st, owner) end
  errors.raise("give --task-name NAME or --all", 2)
end

-- Run fn(st) with the store, closing it whatever happens.
local function with_state(f, fn)
  local st = state.open_flags(f)
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
      supervisor.stop(st, cfg)
      io.stderr:write(string.format("task '%s' paused\n", cfg.name))
    end)
  end)
end

local function start(f, cfg, st, fresh)
  local s = supervisor.status(st, cfg.id) or {}
  if supervisor.status_alive(s, cfg.id) or supervisor.launching(s) then
    errors.raise(string.format("task '%s' is running; only a stopped task can be resumed (mocdc task pause first)", cfg.name), 2)
  end
  s.checkpoint = s.checkpoint or {}
  if fresh then s.checkpoint, s.dead_letters, s.dead_letter_path = {}, 0, nil end
  st:set(key(cfg.id, "desired"), "running")
  local logpath = supervisor.launch(f, st, cfg, s)
  local ok, err = supervisor.wait_started(st, cfg)
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

-- Empty the task's sink tables (restart: the full copy must converge to the
-- source, including rows deleted at the source since).
local function clear_sink_tables(cfg, sink)
  local src, serr = conn.open(cfg.source_uri, { role = "source" })
  if not src then errors.raise(serr) end
  local okr, list = pcall(task_tables, src, cfg)
  src:close()
  if not okr then error(list, 0) end
  for _, t in ipairs(list) do
    if schema.table_exists(sink.c, t.dst_db, t.dst_table) then
      local q = schema.qname(t.dst_db, t.dst_table)
      if not sink.c:exec("TRUNCATE TABLE " .. q) then sink:exec("DELETE FROM " .. q, "clearing " .. q) end
    end
  end
end

-- Remove a task's progress: its watermark rows in the sink, its local
-- checkpoints and dead letters; with clear_tables also the rows of its sink tables.
local function discard_progress(cfg, clear_tables)
  local ok, e = pcall(function()
    local sink = sinkmod.open(cfg.sink_uri, { pipeline = "task:" .. cfg.id })
    local ok2, e2 = pcall(function()
      if clear_tables then clear_sink_tables(cfg, sink) end
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
      supervisor.stop(st, cfg)
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
      supervisor.stop(st, cfg)
      discard_progress(cfg, false)
      local n, err = st:delete_prefix("task/" .. cfg.id .. "/")
      if not n then errors.raise(string.format("task '%s': cannot remove it from the state store: %s", cfg.name, tostring(err))) end
      io.stderr:write(string.format("task '%s' dropped\n", cfg.name))
    end)
  end)
end

-- mocdc task COMMAND [flags]
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
