-- mocdc command line. Exit codes: 0 ok, 1 sync/runtime error, 2 usage or
-- configuration error, 130 interrupted (SIGINT/SIGTERM at a safe point).
local errors = require("mocdc.errors")
local log = require("mocdc.log")

local M = {}

M.USAGE = [[
mocdc - change data capture between MySQL-protocol databases (MatrixOne, MySQL, MariaDB)

Usage:
  mocdc run FILE.lua [--set name=value ...] [--once]   run a pipeline script
  mocdc task create|show|pause|resume|restart|drop ... manage background sync tasks (mocdc task --help)
  mocdc serve [--state-dir DIR | --state-uri URI]      run every task (and, with --state-uri, every
                                                       subscription) of a state store in the foreground
  mocdc sql --sink-uri URI "STATEMENT"                 CREATE SUBSCRIPTION ... | SHOW SUBSCRIPTIONS |
                                                       DROP SUBSCRIPTION name, run against the downstream
  mocdc completion bash|zsh                            print a shell completion script
  mocdc version                                        print versions of mocdc and its libraries
  mocdc help | --help                                  this text

Pipelines (see README.md "Pipelines"):
  pipelines/full_copy.lua    consistent full copy of tables between servers
  --set source_uri=mysql://user:pw@host:port  --set sink_uri=...  --set tables=db.t:db2.t2

Options of run:
  --set name=value   set a pipeline variable (visible to the script as var "name"; a name the
                     script never reads is refused)
  --once             sync until the sink has caught up with the source, then exit 0
  --quiet            only errors on stderr
  --verbose          debug logging

Environment:
  MOCDC_HOME         state directory (default ~/.mocdc)
  MOCDC_LOG_LEVEL    debug | info | warn | error
  MOCDC_LUA_PATH     load the Lua stdlib from this directory instead of the binary (development)
  MOCDC_DEBUG=1      print Lua tracebacks with errors

Exit codes: 0 ok, 1 runtime error, 2 usage or configuration error, 130 interrupted.
]]

local SIGNALS = { [2] = "SIGINT", [15] = "SIGTERM" }

local function fail(msg, code)
  io.stderr:write("mocdc: error: ", log.mask(msg), "\n")
  return code or 1
end

-- Run fn under pcall and turn any error into one line + exit code.
local function protected(fn, ...)
  local ok, res = pcall(fn, ...)
  if ok then return res or 0 end
  if errors.is(res) then return fail(res.msg, res.exit == 130 and 130 or (res.exit == 2 and 2 or 1)) end
  return fail(errors.message(res), 1)
end

local function cmd_version()
  local parts = { "mocdc " .. (require("mocdc.version")) }
  parts[#parts + 1] = jit and jit.version or _VERSION
  local okc, connlib = pcall(require, "mocdc.conn.lib")
  if okc and connlib.client_info then parts[#parts + 1] = "libmariadb " .. connlib.client_info() end
  local okr, relib = pcall(require, "mocdc.regex.lib")
  if okr and relib.version then parts[#parts + 1] = "PCRE2 " .. relib.version() end
  local oks, cklib = pcall(require, "mocdc.checkpoint.lib")
  if oks and cklib.version then parts[#parts + 1] = "SQLite " .. cklib.version() end
  for _, p in ipairs(parts) do print(p) end
  return 0
end

local function cmd_run(args)
  local file, vars, opts = nil, {}, { once = false }
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--set" or a:match("^%-%-set=") then
      local kv = a == "--set" and args[i + 1] or a:sub(7)
      if a == "--set" then i = i + 1 end
      local k, v = (kv or ""):match("^([%w_%.]+)=(.*)$")
      if not k then return fail(string.format("--set expects name=value, got '%s'", tostring(kv)), 2) end
      vars[k] = v
    elseif a == "--once" then opts.once = true
    elseif a == "--quiet" then log.level = "error"
    elseif a == "--verbose" then log.level = "debug"
    elseif a == "-h" or a == "--help" then io.write(M.USAGE) return 0
    elseif a:sub(1, 1) == "-" then return fail("unknown option " .. a .. " (see mocdc --help)", 2)
    elseif not file then file = a
    else return fail("unexpected argument '" .. a .. "' (one pipeline file per run)", 2) end
    i = i + 1
  end
  if not file then return fail("run needs a pipeline file: mocdc run FILE.lua [--set name=value ...]", 2) end
  return protected(function()
    local ctx = require("mocdc.pipeline.env").declare(file, vars)
    local results = require("mocdc.pipeline.job").run(ctx, opts)
    -- a runner that stopped at a safe point on SIGINT/SIGTERM returns normally:
    -- that run was still interrupted (exit 130), not done
    local sig = require("mocdc.util.lib").stop_requested()
    if sig then
      errors.raise(string.format("interrupted by %s at a safe point; the next run continues from there",
        SIGNALS[sig] or ("signal " .. tostring(sig))), 130)
    end
    log.info("done; peak RSS %d MB", math.floor(require("mocdc.util.lib").peak_rss_kb() / 1024 + 0.5))
    for _, summary in ipairs(results) do
      for _, s in ipairs(summary) do
        if s.cdc then
          print(string.format("%s -> %s: %d change(s) applied, in sync at %s", s.src, s.dst, s.rows,
            require("mocdc.position").format(s.position)))
        elseif s.skipped then
          print(string.format("%s -> %s: already in sync", s.src, s.dst))
        elseif s.stats then -- a snapshot-diff iteration
          print(string.format("%s -> %s: %d change(s) applied (%d inserts, %d updates, %d deletes) in %.2f s", s.src,
            s.dst, s.rows, s.stats.inserts, s.stats.updates, s.stats.deletes, s.seconds))
        else
          print(string.format("%s -> %s: %d rows copied in %.2f s", s.src, s.dst, s.rows, s.seconds))
        end
      end
    end
    return 0
  end)
end

function M.completion(shell)
  local cmds = "run task serve sql version help completion"
  local sub = "create show pause resume restart drop"
  local flags = "--task-name --source-uri --sink-uri --sink-type --level --account --databases --tables " ..
    "--no-full --start-ts --end-ts --send-sql-timeout --max-sql-length --exclude --error-handle-option --max-retries --all " ..
    "--state-dir --state-uri --state-uri-file --source-password-file --sink-password-file --help"
  local serve_flags = "--state-dir --state-uri --state-uri-file --help"
  if shell == "bash" then
    print(string.format([[
_mocdc() {
  local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
  if [ "$COMP_CWORD" -eq 1 ]; then COMPREPLY=($(compgen -W "%s" -- "$cur")); return; fi
  case "$prev" in
    --sink-type) COMPREPLY=($(compgen -W "mysql matrixone" -- "$cur")); return ;;
    --level) COMPREPLY=($(compgen -W "account database table" -- "$cur")); return ;;
    --error-handle-option) COMPREPLY=($(compgen -W "stop ignore" -- "$cur")); return ;;
    --state-dir) COMPREPLY=($(compgen -d -- "$cur")); return ;;
    --source-password-file|--sink-password-file|--state-uri-file) COMPREPLY=($(compgen -f -- "$cur")); return ;;
  esac
  case "${COMP_WORDS[1]}" in
    task) if [ "$COMP_CWORD" -eq 2 ]; then COMPREPLY=($(compgen -W "%s" -- "$cur"));
          else COMPREPLY=($(compgen -W "%s" -- "$cur")); fi ;;
    serve) COMPREPLY=($(compgen -W "%s" -- "$cur")) ;;
    completion) COMPREPLY=($(compgen -W "bash zsh" -- "$cur")) ;;
    sql) COMPREPLY=($(compgen -W "--sink-uri --batch" -- "$cur")) ;;
    run) COMPREPLY=($(compgen -f -X '!*.lua' -- "$cur") $(compgen -W "--set --once --quiet --verbose" -- "$cur")) ;;
  esac
}
complete -o default -F _mocdc mocdc]], cmds, sub, flags, serve_flags))
  elseif shell == "zsh" then
    print(string.format([[
#compdef mocdc
_mocdc() {
  if (( CURRENT == 2 )); then compadd %s; return; fi
  case $words[CURRENT-1] in
    --sink-type) compadd mysql matrixone; return ;;
    --level) compadd account database table; return ;;
    --error-handle-option) compadd stop ignore; return ;;
  esac
  case $words[2] in
    task) if (( CURRENT == 3 )); then compadd %s; else compadd -- %s; fi ;;
    serve) compadd -- %s ;;
    completion) compadd bash zsh ;;
    run) _files -g '*.lua' ;;
  esac
}
compdef _mocdc mocdc]], cmds, sub, flags, serve_flags))
  else
    errors.raise("completion needs bash or zsh: mocdc completion bash|zsh", 2)
  end
  return 0
end

function M.main(args)
  local cmd = args[1]
  local rest = {}
  for i = 2, #args do rest[#rest + 1] = args[i] end
  if cmd == "busted" then
    -- test runner inside the host, so specs can require the native modules
    rest[0] = "busted"
    _G.arg = rest
    -- busted's runner raises a nil error after reporting failures: the
    -- report is already printed, so only the exit code matters
    local ok, e = pcall(require("busted.runner"), { standalone = false })
    if not ok then
      if e ~= nil then io.stderr:write("mocdc busted: ", tostring(e), "\n") end
      return 1
    end
    return 0
  elseif cmd == nil or cmd == "help" or cmd == "-h" or cmd == "--help" then
    io.write(M.USAGE)
    return cmd == nil and 2 or 0
  elseif cmd == "version" or cmd == "--version" then
    return cmd_version()
  elseif cmd == "run" then
    return cmd_run(rest)
  elseif cmd == "task" then
    return protected(require("mocdc.task.cli").main, rest)
  elseif cmd == "task-worker" then
    return protected(function()
      local id = rest[1]
      local f = require("mocdc.task.cli").parse_flags({ select(2, unpack(rest)) })
      return require("mocdc.task.worker").run(id, f)
    end)
  elseif cmd == "serve" then
    -- with --state-uri: subscription executor + scanner + task supervisor; else the task supervisor
    return protected(function() return require("mocdc.serve").main(require("mocdc.task.cli").parse_flags(rest)) end)
  elseif cmd == "sql" then
    return protected(require("mocdc.subscription").sql_main, rest)
  elseif cmd == "completion" then
    return protected(function() return M.completion(rest[1]) end)
  end
  return fail(string.format("unknown command '%s' (see mocdc --help)", cmd), 2)
end

return M
