-- Integration-test harness: real, throwaway `mariadbd` servers for specs.
--
--   local mdb = require("spec.helpers.mariadb")
--   mdb.describe("binlog reader", function()           -- one failing spec (with the reason)
--     local src                                         -- when mariadbd is not installed;
--     setup(function() src = mdb.start{ name = "source", binlog = true } end)
--     it("...", function() src:sql("CREATE DATABASE d") end)
--   end)                                                -- + teardown(mdb.stop_all)
--
-- Server object (mdb.start{...}):
--   fields  name, host ("127.0.0.1"), port, user ("root"), password ("rootpw"), uri
--           ("mysql://root:rootpw@127.0.0.1:PORT"), datadir, socket, pid, server_id, binlog
--           (bool), dir (the server's temp dir), log (error log path), cnf (its my.cnf)
--   :sql(text[, db])  runs one or more statements through the `mariadb` client (-N -B, TCP);
--                     returns stdout as text; raises "<spec file:line>: <name>: ERROR 1064 (42000)
--                     at line 1: You have an error ..." (the server's message)
--   :rows(select[, db]) -> rows, names. rows: array of arrays of strings, SQL NULL = mdb.NULL
--                     (== cjson.null == mocdc.conn.lib NULL); names: column names (when there
--                     is at least one row). Exact: it parses `mariadb --xml`, which marks NULL
--                     with xsi:nil; the one lossy byte is 0x00 (the client prints a space):
--                     select HEX(col) when a value may contain NUL bytes. One statement only.
--   :stop()           SIGTERM, wait until the process is gone (SIGKILL after 60 s)
--   :kill()           SIGKILL, wait until gone (crash simulation; InnoDB recovers on restart)
--   :start_again()    same datadir, port and options
--   :running()        bool
--   :conn_opts()      { host=, port=, user=, password= } for mocdc.conn.lib.connect
-- mdb.start{ name = "x", binlog = true, extra = { "gtid_strict_mode=1", ... }, tz = "Asia/Tokyo" }
--   extra: my.cnf lines for the [mariadbd] section ("--opt=v" also accepted).
--   tz: the server's OS time zone (TZ of the mariadbd process; default: inherited)
-- mdb.stop_all()      stops every server this process started and removes their dirs.
-- mdb.available, mdb.skip_reason: false + message when mariadbd is not installed (specs fail).
--
-- Speed: `mariadb-install-db` runs once into a template (/tmp/mocdc-test-template-<uid>,
-- rebuilt when the server version changes); each server is a `cp -a` of it (~0.5 s start).
-- Cleanup: teardown (mdb.describe adds it), busted's exit event, a __gc sentinel that runs at
-- lua_close even when a spec errors, and at load time every run dir whose owner process is
-- gone has its servers SIGKILLed and is removed.
-- Environment: MOCDC_TEST_KEEP=1 keeps the run dirs (logs, datadirs); MOCDC_TEST_TMPDIR
-- (default /tmp) holds them; MOCDC_TEST_MARIADBD=<path> picks the server binary.
-- Never the system service: every server uses its own --defaults-file, datadir and port.
local util = require("mocdc.util.lib")
local ffi = require("ffi")
local cjson = require("cjson")

local M = {}

M.NULL = cjson.null
M.PASSWORD = "rootpw"

local REGISTRY_KEY = "mocdc.spec.helpers.mariadb"
local TMP = os.getenv("MOCDC_TEST_TMPDIR") or "/tmp"

---------------------------------------------------------------------------
-- small process helpers
---------------------------------------------------------------------------

local function q(s) -- shell-quote
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function sh(cmd) -- stdout of cmd (stderr kept), and its exit code
  local p = assert(io.popen("( " .. cmd .. " ); echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  local body, rc = out:match("^(.-)__rc=(%d+)\n?$")
  return body or out, tonumber(rc) or -1
end

-- servers must not inherit the test process's descriptors (pipes, sqlite files)
local CLOSE_FDS = " 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-"

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

local function which(prog)
  for dir in (os.getenv("PATH") or ""):gmatch("[^:]+") do
    if util.exists(dir .. "/" .. prog) then return dir .. "/" .. prog end
  end
  for _, dir in ipairs({ "/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin" }) do
    if util.exists(dir .. "/" .. prog) then return dir .. "/" .. prog end
  end
  return nil
end

-- true while pid exists and is not a zombie
local function alive(pid)
  if not pid then return false end
  local ok, _, errno = util.kill(pid, 0)
  if not ok and errno ~= 1 then return false end -- 1 = EPERM: exists, not ours
  local stat = read_file("/proc/" .. pid .. "/stat")
  if stat then
    local state = stat:match("^%d+ %b() (%a)")
    if state == "Z" or state == "X" then return false end
  end
  return true
end

local function cmdline(pid)
  local s = read_file("/proc/" .. pid .. "/cmdline")
  return s and s:gsub("%z", " ") or ""
end

-- process start time (clock ticks since boot): tells a reused pid apart
local function starttime(pid)
  local stat = read_file("/proc/" .. pid .. "/stat")
  if not stat then return nil end
  local rest = stat:match("^%d+ %b() (.*)$")
  local i = 0
  for field in rest:gmatch("%S+") do
    i = i + 1
    if i == 20 then return field end -- field 22 overall
  end
end

local function wait_gone(pid, timeout)
  local deadline = util.mono() + timeout
  while alive(pid) do
    if util.mono() > deadline then return false end
    util.sleep(0.02)
  end
  return true
end

---------------------------------------------------------------------------
-- free port: bind 127.0.0.1:<candidate> and release it
---------------------------------------------------------------------------

pcall(ffi.cdef, [[
  struct mocdc_test_sockaddr_in { uint16_t family; uint16_t port; uint32_t addr; uint8_t zero[8]; };
  int socket(int domain, int type, int protocol);
  int bind(int fd, const void *addr, uint32_t len);
  int close(int fd);
  unsigned int getuid(void);
  uint16_t htons(uint16_t v);
]])

local function port_free(port)
  local fd = ffi.C.socket(2, 1, 0) -- AF_INET, SOCK_STREAM
  if fd < 0 then return true end -- cannot check: let mariadbd try
  local sa = ffi.new("struct mocdc_test_sockaddr_in")
  sa.family = 2
  sa.port = ffi.C.htons(port)
  sa.addr = 0x0100007f -- 127.0.0.1 in network order (little-endian host)
  if ffi.abi("be") then sa.addr = 0x7f000001 end
  local rc = ffi.C.bind(fd, sa, ffi.sizeof(sa))
  ffi.C.close(fd)
  return rc == 0
end

local port_seed = false
local function free_port(taken)
  if not port_seed then
    math.randomseed(util.getpid() * 7919 + math.floor(util.now() * 1000) % 100000)
    port_seed = true
  end
  for _ = 1, 500 do
    -- below the usual ephemeral range (32768+), so client sockets do not collide
    local p = math.random(20000, 32000)
    if not taken[p] and port_free(p) then return p end
  end
  error("mariadb harness: no free TCP port found on 127.0.0.1")
end

---------------------------------------------------------------------------
-- process-wide state (in the Lua registry: busted's insulate resets package.loaded
-- and _G per spec file, the registry survives)
---------------------------------------------------------------------------

local state = debug.getregistry()[REGISTRY_KEY]

-- MOCDC_TEST_MARIADBD=<path> picks another server binary (a missing path simulates "not installed":
-- every mdb.describe then fails)
local MARIADBD = os.getenv("MOCDC_TEST_MARIADBD") or which("mariadbd") or which("mysqld")
if not util.exists(MARIADBD or "") then MARIADBD = nil end
local CLIENT = which("mariadb") or which("mysql")
local ADMIN = which("mariadb-admin") or which("mysqladmin")
local INSTALL_DB = which("mariadb-install-db") or which("mysql_install_db")

M.available = MARIADBD ~= nil and CLIENT ~= nil and ADMIN ~= nil and INSTALL_DB ~= nil
M.skip_reason = not M.available and
  ((os.getenv("MOCDC_TEST_MARIADBD") and not MARIADBD) and
    ("MOCDC_TEST_MARIADBD=" .. os.getenv("MOCDC_TEST_MARIADBD") .. " does not exist: unset it or point it at mariadbd")
  or ("MariaDB server not installed (need mariadbd, mariadb, mariadb-admin, mariadb-install-db): " ..
    "run scripts/deps.sh or apt-get install mariadb-server mariadb-client")) or nil

local UID = tonumber(ffi.C.getuid())
local IS_ROOT = UID == 0

-- kill servers of earlier runs whose test process is gone, and remove their dirs
local function reap_stale_runs()
  local out = sh("ls -d " .. q(TMP) .. "/mocdc-test-run-* 2>/dev/null")
  for dir in out:gmatch("[^\n]+") do
    local owner = read_file(dir .. "/owner")
    local opid, ostart = (owner or ""):match("^(%d+) (%S+)")
    opid = tonumber(opid)
    local gone = owner and (not alive(opid) or starttime(opid) ~= ostart)
    if gone then
      local pids = sh("cat " .. q(dir) .. "/*/mariadbd.pid 2>/dev/null")
      for pid in pids:gmatch("%d+") do
        pid = tonumber(pid)
        if alive(pid) and cmdline(pid):find(dir, 1, true) then
          util.kill(pid, 9)
          wait_gone(pid, 10)
        end
      end
      os.execute("rm -rf " .. q(dir))
    end
  end
end

local function stop_all_now(state_, graceful)
  for _, srv in ipairs(state_.servers) do
    if srv.pid and alive(srv.pid) then
      util.kill(srv.pid, graceful and 15 or 9)
    end
  end
  for _, srv in ipairs(state_.servers) do
    if srv.pid and not wait_gone(srv.pid, graceful and 60 or 10) then
      util.kill(srv.pid, 9)
      wait_gone(srv.pid, 10)
    end
    srv.pid = nil
  end
  state_.servers = {}
  state_.names = {}
  if state_.run_dir and not os.getenv("MOCDC_TEST_KEEP") then
    os.execute("rm -rf " .. q(state_.run_dir))
    state_.run_dir = nil
  end
end

if not state then
  state = { servers = {}, names = {}, run_dir = nil, ports = {}, next_id = 1 }
  debug.getregistry()[REGISTRY_KEY] = state
  -- safety net: runs at lua_close (normal exit, or after busted raises on failures)
  local sentinel = newproxy(true)
  getmetatable(sentinel).__gc = function() stop_all_now(state, false) end
  state.sentinel = sentinel
  local ok, busted = pcall(require, "busted")
  if ok and type(busted) == "table" and busted.subscribe then
    pcall(busted.subscribe, { "exit" }, function()
      stop_all_now(state, true)
      return nil, true
    end)
  end
  if M.available then reap_stale_runs() end
end

local function run_dir()
  if not state.run_dir then
    local d = sh("mktemp -d " .. q(TMP .. "/mocdc-test-run-XXXXXX")):match("[^\n]+")
    assert(d and util.exists(d), "mariadb harness: cannot create a temp dir in " .. TMP)
    local me = util.getpid()
    write_file(d .. "/owner", me .. " " .. tostring(starttime(me)) .. "\n")
    state.run_dir = d
  end
  return state.run_dir
end

---------------------------------------------------------------------------
-- template datadir (mariadb-install-db once per machine/user/server version)
---------------------------------------------------------------------------

local BASE_OPTS = {
  "innodb-buffer-pool-size=128M",
  "innodb-log-file-size=64M",
}

local function server_version()
  local out = sh(q(MARIADBD) .. " --version 2>&1")
  return (out:gsub("%s+$", ""))
end

local function template_dir()
  local tdir = TMP .. "/mocdc-test-template-" .. UID
  local want = server_version() .. " | " .. table.concat(BASE_OPTS, " ") .. " | pw=" .. M.PASSWORD
  if read_file(tdir .. "/ready") == want then return tdir end

  local tmp = string.format("%s.tmp-%d-%d", tdir, util.getpid(), math.random(1, 1e9))
  os.execute("rm -rf " .. q(tmp))
  -- each install gets its own tmpdir: concurrent bootstraps sharing /tmp collide on their
  -- "#sql-temptable-*" files ("Unknown table 'mysql.tmp_user_sys'" on a fresh machine)
  assert(util.mkdir_p(tmp .. "/tmp"))
  local user = IS_ROOT and " --user=root" or ""
  local opts = ""
  for _, o in ipairs(BASE_OPTS) do opts = opts .. " --" .. o end
  local out, rc = sh(q(INSTALL_DB) .. " --no-defaults --datadir=" .. q(tmp .. "/data") ..
    " --tmpdir=" .. q(tmp .. "/tmp") ..
    " --auth-root-authentication-method=normal --skip-test-db --skip-name-resolve" .. user .. opts ..
    " >" .. q(tmp .. "/install.log") .. " 2>&1")
  if rc ~= 0 then
    error("mariadb harness: mariadb-install-db failed (" .. rc .. "): " ..
      (read_file(tmp .. "/install.log") or out))
  end
  -- start it once without networking to set the root password
  local sock = tmp .. "/s.sock"
  local pid = tonumber((sh(q(MARIADBD) .. " --no-defaults --datadir=" .. q(tmp .. "/data") ..
    " --socket=" .. q(sock) .. " --tmpdir=" .. q(tmp .. "/tmp") ..
    " --skip-networking --pid-file=" .. q(tmp .. "/t.pid") ..
    " --log-error=" .. q(tmp .. "/t.err") .. user .. opts ..
    " >/dev/null 2>&1 </dev/null" .. CLOSE_FDS .. " & echo $!")):match("%d+"))
  local deadline = util.mono() + 60
  while select(2, sh(q(ADMIN) .. " --no-defaults -S " .. q(sock) .. " -uroot ping >/dev/null 2>&1")) ~= 0 do
    if not alive(pid) or util.mono() > deadline then
      util.kill(pid, 9)
      error("mariadb harness: template server did not start: " .. (read_file(tmp .. "/t.err") or ""))
    end
    util.sleep(0.05)
  end
  local pw = M.PASSWORD
  local sql = table.concat({
    "DELETE FROM mysql.global_priv WHERE User IN ('root', '') AND Host <> 'localhost'",
    "DELETE FROM mysql.proxies_priv WHERE Host <> 'localhost'",
    "FLUSH PRIVILEGES",
    "ALTER USER 'root'@'localhost' IDENTIFIED BY '" .. pw .. "'",
    "CREATE USER 'root'@'%' IDENTIFIED BY '" .. pw .. "'",
    "GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION",
  }, ";\n") .. ";\n"
  write_file(tmp .. "/init.sql", sql)
  local err, rc2 = sh(q(CLIENT) .. " --no-defaults -S " .. q(sock) .. " -uroot <" .. q(tmp .. "/init.sql") .. " 2>&1")
  util.kill(pid, 15)
  wait_gone(pid, 60)
  if rc2 ~= 0 then error("mariadb harness: cannot set the root password: " .. err) end
  os.execute("rm -f " .. q(sock) .. " " .. q(tmp .. "/t.pid"))
  write_file(tmp .. "/ready", want)

  -- publish atomically; a concurrent creator may have won (then use theirs)
  if util.exists(tdir) and read_file(tdir .. "/ready") ~= want then
    local old = string.format("%s.old-%d-%d", tdir, util.getpid(), math.random(1, 1e9))
    os.rename(tdir, old)
    os.execute("rm -rf " .. q(old))
  end
  if not os.rename(tmp, tdir) then os.execute("rm -rf " .. q(tmp)) end
  assert(read_file(tdir .. "/ready") == want, "mariadb harness: template " .. tdir .. " not usable")
  return tdir
end

---------------------------------------------------------------------------
-- servers
---------------------------------------------------------------------------

local Server = {}
Server.__index = Server

local function cnf_text(srv)
  local lines = {
    "[mariadbd]",
    "datadir=" .. srv.datadir,
    "socket=" .. srv.socket,
    "pid-file=" .. srv.dir .. "/mariadbd.pid",
    "log-error=" .. srv.log,
    "tmpdir=" .. srv.dir .. "/tmp",
    "port=" .. srv.port,
    "bind-address=127.0.0.1",
    "skip-name-resolve",
    "local-infile=1",
    "max-allowed-packet=64M",
    "character-set-server=utf8mb4",
    "collation-server=utf8mb4_general_ci",
    "server-id=" .. srv.server_id,
  }
  if IS_ROOT then lines[#lines + 1] = "user=root" end
  for _, o in ipairs(BASE_OPTS) do lines[#lines + 1] = o end
  if srv.binlog then
    lines[#lines + 1] = "log-bin=" .. srv.datadir .. "/mysql-bin"
    lines[#lines + 1] = "binlog-format=ROW"
    lines[#lines + 1] = "binlog-row-image=FULL"
    lines[#lines + 1] = "skip-log-slave-updates"
  end
  for _, l in ipairs(srv.extra) do lines[#lines + 1] = (l:gsub("^%-%-", "")) end
  return table.concat(lines, "\n") .. "\n"
end

local function log_tail(srv, n)
  local s = read_file(srv.log) or ""
  local lines = {}
  for l in s:gmatch("[^\n]+") do lines[#lines + 1] = l end
  return table.concat(lines, "\n", math.max(1, #lines - (n or 15) + 1))
end

local function ping(srv)
  local _, rc = sh(q(ADMIN) .. " --no-defaults --protocol=TCP -h127.0.0.1 -P" .. srv.port ..
    " -uroot -p" .. q(M.PASSWORD) .. " --connect-timeout=2 ping >/dev/null 2>&1")
  return rc == 0
end

-- Launch mariadbd and wait until it answers ping. Returns true, or false + "bind"
-- when the port was taken, or raises with the log tail.
local function launch(srv)
  write_file(srv.cnf, cnf_text(srv))
  local log_size = #(read_file(srv.log) or "")
  local out = sh((srv.tz and ("TZ=" .. q(srv.tz) .. " ") or "") .. q(MARIADBD) .. " --defaults-file=" .. q(srv.cnf) ..
    " >>" .. q(srv.dir .. "/stdout.log") ..
    " 2>&1 </dev/null" .. CLOSE_FDS .. " & echo $!")
  srv.pid = tonumber(out:match("%d+"))
  local deadline = util.mono() + 120
  while true do
    if ping(srv) then break end
    if not alive(srv.pid) then
      srv.pid = nil
      local new = (read_file(srv.log) or ""):sub(log_size + 1)
      if new:find("Address already in use", 1, true) or new:find("Bind on TCP/IP port", 1, true) then
        return false, "bind"
      end
      error(string.format("mariadb harness: server '%s' (port %d) exited during startup:\n%s",
        srv.name, srv.port, log_tail(srv)))
    end
    if util.mono() > deadline then
      util.kill(srv.pid, 9)
      wait_gone(srv.pid, 10)
      srv.pid = nil
      error(string.format("mariadb harness: server '%s' (port %d) not ready after 120 s:\n%s",
        srv.name, srv.port, log_tail(srv)))
    end
    util.sleep(0.03)
  end
  local filepid = tonumber((read_file(srv.dir .. "/mariadbd.pid") or ""):match("%d+"))
  if filepid then srv.pid = filepid end
  return true
end

function M.start(opts)
  opts = opts or {}
  if not M.available then error("mariadb harness: " .. M.skip_reason, 2) end
  local tdir = template_dir()
  local base = tostring(opts.name or "mariadb"):gsub("[^%w_.-]", "_")
  local name = base
  local n = 1
  while state.names[name] do
    n = n + 1
    name = base .. "-" .. n
  end
  state.names[name] = true

  local dir = run_dir() .. "/" .. name
  local extra = {}
  for k, v in pairs(opts.extra or {}) do
    if type(k) == "number" then extra[#extra + 1] = tostring(v)
    else extra[#extra + 1] = k .. "=" .. tostring(v) end
  end
  local srv = setmetatable({
    name = name,
    host = "127.0.0.1",
    user = "root",
    password = M.PASSWORD,
    dir = dir,
    datadir = dir .. "/data",
    socket = dir .. "/mariadbd.sock",
    log = dir .. "/error.log",
    cnf = dir .. "/my.cnf",
    binlog = opts.binlog and true or false,
    extra = extra,
    tz = opts.tz,
  }, Server)
  assert(util.mkdir_p(dir .. "/tmp"))
  local _, rc = sh("cp -a " .. q(tdir .. "/data") .. " " .. q(srv.datadir))
  if rc ~= 0 then error("mariadb harness: cannot copy the template datadir to " .. srv.datadir) end

  state.servers[#state.servers + 1] = srv
  for _ = 1, 10 do
    srv.port = free_port(state.ports)
    srv.server_id = srv.port -- unique among the servers of this machine
    srv.uri = string.format("mysql://root:%s@127.0.0.1:%d", M.PASSWORD, srv.port)
    if launch(srv) then
      state.ports[srv.port] = true
      return srv
    end
  end
  error("mariadb harness: could not bind a free port for '" .. name .. "' after 10 tries")
end

function Server:running()
  return alive(self.pid)
end

function Server:conn_opts()
  return { host = self.host, port = self.port, user = self.user, password = self.password }
end

local function client_cmd(self, flags, db)
  return q(CLIENT) .. " --no-defaults --protocol=TCP -h127.0.0.1 -P" .. self.port ..
    " -uroot -p" .. q(self.password) .. " --default-character-set=utf8mb4 " .. flags ..
    (db and (" -D" .. q(db)) or "")
end

local function run_client(self, flags, text, db)
  if type(text) ~= "string" then error("bad argument #1 to 'sql' (string expected, got " .. type(text) .. ")", 3) end
  local qf, ef = self.dir .. "/query.sql", self.dir .. "/query.err"
  write_file(qf, text)
  local out, rc = sh(client_cmd(self, flags, db) .. " <" .. q(qf) .. " 2>" .. q(ef))
  if rc ~= 0 then
    local err = (read_file(ef) or ""):gsub("%s+$", "")
    -- the client echoes the failing statement between dashes before the error: drop it
    err = err:match("\n(ERROR %d+ .*)$") or err
    if err == "" then err = "mariadb client exited with " .. rc end
    error(self.name .. ": " .. err, 3)
  end
  return out
end

function Server:sql(text, db)
  return run_client(self, "-N -B", text, db)
end

local function xml_unescape(s)
  return (s:gsub("&(#?%w+);", function(e)
    if e == "lt" then return "<" elseif e == "gt" then return ">"
    elseif e == "quot" then return '"' elseif e == "amp" then return "&"
    elseif e == "apos" then return "'" end
    local num = e:match("^#(%d+)$")
    if num then return string.char(tonumber(num)) end
    return "&" .. e .. ";"
  end))
end

function Server:rows(select_sql, db)
  local out = run_client(self, "--xml", select_sql, db)
  local rows, names = {}, nil
  for body in out:gmatch("<row>(.-)\n%s*</row>") do
    local row, rnames = {}, {}
    -- each field: <field name="x" xsi:nil="true" /> or <field name="x">value</field>
    local pos = 1
    while true do
      local s, e, name, rest = body:find('<field name="([^"]*)"([^>]*)>', pos)
      if not s then break end
      rnames[#rnames + 1] = xml_unescape(name)
      if rest:find('xsi:nil="true"', 1, true) then
        row[#row + 1] = M.NULL
        pos = e + 1
      else
        local close = body:find("</field>", e + 1, true)
        row[#row + 1] = xml_unescape(body:sub(e + 1, close - 1))
        pos = close + 8
      end
    end
    rows[#rows + 1] = row
    names = names or rnames
  end
  return rows, names
end

function Server:stop()
  if self.pid and alive(self.pid) then
    util.kill(self.pid, 15)
    if not wait_gone(self.pid, 60) then
      util.kill(self.pid, 9)
      wait_gone(self.pid, 10)
    end
  end
  self.pid = nil
end

function Server:kill()
  if self.pid and alive(self.pid) then
    util.kill(self.pid, 9)
    wait_gone(self.pid, 10)
  end
  self.pid = nil
end

function Server:start_again()
  if self.pid and alive(self.pid) then error("mariadb harness: server '" .. self.name .. "' is running", 2) end
  for _ = 1, 20 do
    if launch(self) then return self end
    util.sleep(0.25) -- port still held (another process took it meanwhile?)
  end
  error("mariadb harness: port " .. self.port .. " of server '" .. self.name .. "' stays in use", 2)
end

function M.stop_all()
  stop_all_now(state, true)
end

-- describe() that stops every server at the end of the block. Integration specs never
-- skip: when MariaDB is missing the block is one failing spec naming what is missing
-- (a green run always means the integration specs ran).
function M.describe(name, fn)
  local busted = require("busted")
  if not M.available then
    return busted.describe(name, function()
      busted.it("needs a MariaDB server", function()
        error("mariadb harness: " .. M.skip_reason, 0)
      end)
    end)
  end
  return busted.describe(name, function()
    busted.teardown(M.stop_all)
    fn()
  end)
end

return M
