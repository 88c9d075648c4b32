-- Runs the mocdc binary under test as a subprocess (specs run inside the same
-- binary: util.exe_path()). Returns rc, stdout, stderr.
local util = require("mocdc.util.lib")
local M = {}

M.exe = util.exe_path()
M.root = os.getenv("MOCDC_ROOT") or "."

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
M.q = q

local function slurp(p)
  local f = io.open(p, "rb")
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  os.remove(p)
  return s
end

-- run({args...}, {env = {K=V}}) -> rc, out, err
function M.run(args, o)
  o = o or {}
  local parts = {}
  for k, v in pairs(o.env or {}) do parts[#parts + 1] = k .. "=" .. q(v) end
  parts[#parts + 1] = q(M.exe)
  for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
  local out, err = os.tmpname(), os.tmpname()
  local cmd = table.concat(parts, " ") .. " >" .. out .. " 2>" .. err .. " </dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-"
  local p = io.popen(cmd .. "; echo $?")
  local rc = tonumber(p:read("*a"):match("(%d+)%s*$"))
  p:close()
  return rc, slurp(out), slurp(err)
end

-- start in the background; returns pid (stdout+stderr to logfile)
function M.spawn(args, logfile, o)
  o = o or {}
  local parts = {}
  for k, v in pairs(o.env or {}) do parts[#parts + 1] = k .. "=" .. q(v) end
  parts[#parts + 1] = "exec " .. q(M.exe)
  for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
  local p = io.popen("sh -c " .. q(table.concat(parts, " ") .. " >>" .. q(logfile) .. " 2>&1 </dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-") .. " & echo $!")
  local pid = tonumber(p:read("*a"))
  p:close()
  return pid
end

-- spawn_rc(args, logfile[, o]): start in the background under a shell that
-- records the exit status; returns pid and rc() (nil while it runs). A status
-- of 128+N from a death by signal N is told apart from exit(130) by stderr.
function M.spawn_rc(args, logfile, o)
  o = o or {}
  local parts = {}
  for k, v in pairs(o.env or {}) do parts[#parts + 1] = k .. "=" .. q(v) end
  parts[#parts + 1] = q(M.exe)
  for _, a in ipairs(args) do parts[#parts + 1] = q(a) end
  local pidf, rcf = logfile .. ".pid", logfile .. ".rc"
  os.remove(pidf)
  os.remove(rcf)
  local p = io.popen("sh -c " .. q(table.concat(parts, " ") .. " >>" .. q(logfile) .. " 2>&1 </dev/null & echo $! > " ..
    q(pidf) .. "; wait $!; echo $? > " .. q(rcf)) .. " >/dev/null 2>&1 </dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &")
  p:close()
  local function num(path)
    local f = io.open(path)
    if not f then return nil end
    local v = tonumber(f:read("*a"))
    f:close()
    return v
  end
  local pid = M.eventually(function() return num(pidf) end, 10, "the pid of " .. tostring(args[1]))
  return pid, function() return num(rcf) end
end

function M.alive(pid)
  return util.kill(pid, 0) ~= nil
end

function M.wait(pid, timeout)
  local deadline = util.mono() + (timeout or 60)
  while M.alive(pid) and util.mono() < deadline do
    os.execute("sleep 0.05")
    -- reap: the child is ours via sh; `wait` is not available from Lua, kill -0 on a zombie succeeds,
    -- so also check /proc state
    local f = io.open("/proc/" .. pid .. "/stat")
    if f then
      local st = f:read("*a"):match("^%d+ %b() (%a)")
      f:close()
      if st == "Z" then return true end
    end
  end
  return not M.alive(pid)
end

-- eventually(fn[, timeout[, what]]): poll fn (errors count as "not yet") until
-- it returns a true value; raise naming `what` and the last result on timeout.
function M.eventually(fn, timeout, what)
  local deadline = util.mono() + (timeout or 30)
  local last
  while util.mono() < deadline do
    local ok, res = pcall(fn)
    if ok and res then return res end
    last = res
    util.sleep(0.1)
  end
  error("timed out waiting for " .. (what or "condition") .. ": " .. tostring(last), 2)
end

function M.tmpdir()
  local p = io.popen("mktemp -d /tmp/mocdc-spec-XXXXXX")
  local d = p:read("*l")
  p:close()
  return d
end

-- stderr holds exactly one error line (the last line); timestamped INFO log
-- lines before it are allowed, nothing after it
function M.one_line(s)
  local errs = 0
  for line in s:gmatch("[^\n]+") do
    if line:match("^mocdc: error: ") then errs = errs + 1
    elseif not line:match("^%d%d%d%d%-%d%d%-%d%dT[%d:.]+Z %u+ ") then return false end
  end
  return errs == 1 and s:match("mocdc: error: [^\n]*\n$") ~= nil
end

return M
