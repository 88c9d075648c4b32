-- mocdc.uri: MySQL-protocol connection strings.
--
--   mysql://user:password@host:port[/database][?option=value&...]
--   mysql://acct#user[#role]:password@host:port     MatrixOne login "acct#user[#role]"
--   mysql://acct%3Auser[%3Arole]:password@host:port MatrixOne (older) login "acct:user[:role]"
--
-- The user part ends at the last '@' and splits at its FIRST ':': login before,
-- password after. The password may hold '@', '/', '?' and '#' as they are, but a
-- ':' in it must be written %3A: a second raw ':' is refused (it could be a
-- password or the older MatrixOne login, and guessing wrong would send half a
-- password as the user name). User, password, database and option values are
-- percent-decoded. Options (README "Connection URIs and TLS"): ssl-mode,
-- ssl-ca, ssl-cert, ssl-key, socket, connect-timeout, read-timeout,
-- write-timeout, charset; `-` and `_` are the same in names. Failures are
-- `nil, msg`; every message shows the URI with everything after the user
-- part's first ':' masked.
local M = {}

local EXPECTED = "(expected mysql://user:password@host:port[/database])"
local MASK = "******"
local SCHEMES = { mysql = true, mariadb = true, matrixone = true }
local DEFAULT_PORT = 3306

-- option name (after '-' -> '_') -> validator returning value | nil, reason
local SSL_MODES = {
  disable = "disable", disabled = "disable",
  require = "require", required = "require",
  verify_ca = "verify_ca", verify_identity = "verify_identity",
}

local function seconds(v)
  if not v:match("^%d+$") or tonumber(v) == 0 then
    return nil, "must be a whole number of seconds > 0"
  end
  return tonumber(v)
end

local function nonempty(v)
  if v == "" then return nil, "must not be empty" end
  return v
end

local OPTIONS = {
  ssl_mode = function(v)
    local m = SSL_MODES[v:lower():gsub("-", "_")]
    if not m then return nil, "must be disable, require, verify_ca or verify_identity" end
    return m
  end,
  ssl_ca = nonempty,
  ssl_cert = nonempty,
  ssl_key = nonempty,
  socket = function(v)
    if v:sub(1, 1) ~= "/" then return nil, "must be an absolute path to the server's unix socket" end
    return v
  end,
  connect_timeout = seconds,
  read_timeout = seconds,
  write_timeout = seconds,
  charset = function(v)
    if not v:match("^[%w_]+$") then return nil, "must be a character set name like utf8mb4" end
    return v
  end,
}
local OPTION_LIST = "ssl-mode, ssl-ca, ssl-cert, ssl-key, socket, connect-timeout, read-timeout, write-timeout, " ..
  "charset"

local function decode(s)
  return (s:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function encode(s)
  return (s:gsub("[^%w%-%._~!$&'()*+,;=]", function(c) return string.format("%%%02X", c:byte()) end))
end

-- Position of the last occurrence of byte `ch` in s (plain), or nil.
local function last_index(s, ch)
  local pos
  local i = 0
  while true do
    i = s:find(ch, i + 1, true)
    if not i then return pos end
    pos = i
  end
end

-- Mask the user part of a URI (what lies between '://' and the last '@'):
-- everything after its first ':' is the password, whatever it holds.
function M.mask_userinfo(userinfo)
  local c1 = userinfo:find(":", 1, true)
  if not c1 then return userinfo end
  return userinfo:sub(1, c1) .. MASK
end

-- Mask the password in a connection string, whatever its shape: everything
-- after the user part's first ':'; without an '@', anything after a ':' that
-- is not a port.
function M.mask(s)
  if type(s) ~= "string" then s = tostring(s) end
  local start = 1
  local sep = s:find("://", 1, true)
  if sep then start = sep + 3 end
  local head, rest = s:sub(1, start - 1), s:sub(start)
  local at = last_index(rest, "@")
  if at then
    return head .. M.mask_userinfo(rest:sub(1, at - 1)) .. rest:sub(at)
  end
  -- no '@': "host:port" is fine, "user:secret" (or worse) is not
  local hostport, tail = rest:match("^([^/?]*)(.*)$")
  if hostport:sub(1, 1) == "[" then
    local after = hostport:match("^%[[^%]]*%](.*)$")
    if after and (after == "" or after:match("^:%d*$")) then return s end
  end
  local c1 = hostport:find(":", 1, true)
  if not c1 or hostport:sub(c1 + 1):match("^%d*$") then return s end
  return head .. hostport:sub(1, c1) .. MASK .. tail
end

-- Split the user part into login fields (all percent-decoded): login before
-- the first ':', password after it; a MatrixOne login "acct#user[#role]" or
-- (decoded from %3A) "acct:user[:role]" also gives account, user and role.
local function parse_userinfo(userinfo)
  local c = userinfo:find(":", 1, true)
  local raw_pw = c and userinfo:sub(c + 1)
  if raw_pw and raw_pw:find(":", 1, true) then
    return nil, "a ':' in the password must be written %3A (a MatrixOne login is acc#user[#role]:password)"
  end
  local r = { login = decode(c and userinfo:sub(1, c - 1) or userinfo) }
  if raw_pw then r.password = decode(raw_pw) end
  for _, sep in ipairs({ "#", ":" }) do
    local acct, user, role = r.login:match("^([^" .. sep .. "]*)" .. sep .. "([^" .. sep .. "]*)" .. sep .. "?(.*)$")
    if acct then
      if acct == "" then return nil, "no account name before '" .. sep .. "'" end
      r.account, r.user = acct, user
      if role ~= "" then r.role = role end
      break
    end
  end
  r.user = r.user or r.login
  if r.user == "" then return nil, "no user name" end
  return r
end

local function parse_options(query)
  local options = {}
  if query == "" then return options end
  for item in query:gmatch("[^&]+") do
    local k, v = item:match("^([^=]*)=(.*)$")
    if not k then k, v = item, "" end
    local raw = decode(k)
    local key = raw:lower():gsub("-", "_")
    local check = OPTIONS[key]
    if not check then
      return nil, string.format("unknown option '%s' (known: %s)", raw, OPTION_LIST)
    end
    local value, why = check(decode(v))
    if value == nil then
      return nil, string.format("option %s '%s' %s", key:gsub("_", "-"), decode(v), why)
    end
    options[key] = value
  end
  return options
end

-- parse(s[, {password = override}]) -> {scheme, user, password, host, port,
--   database, options, account, role, login, masked} | nil, msg
function M.parse(s, opts)
  if type(s) ~= "string" then
    error("bad argument #1 to 'parse' (string expected, got " .. type(s) .. ")", 2)
  end
  local masked = M.mask(s)
  local function bad(what, no_expected)
    return nil, string.format("invalid URI '%s': %s%s", masked, what, no_expected and "" or (" " .. EXPECTED))
  end
  if s == "" then return bad("it is empty") end
  if s:find("^%s") or s:find("%s$") then return bad("it has leading or trailing spaces") end

  local scheme, rest = s:match("^([%a][%w+.-]*)://(.*)$")
  if not scheme then return bad("it does not start with 'mysql://'") end
  if not SCHEMES[scheme:lower()] then return bad(string.format("unsupported scheme '%s'", scheme)) end

  local at = last_index(rest, "@")
  if not at then return bad("no user name (missing 'user@')") end
  local userinfo, after = rest:sub(1, at - 1), rest:sub(at + 1)
  if userinfo == "" then return bad("no user name before '@'") end
  local login, why = parse_userinfo(userinfo)
  if not login then return bad(why, why:find("%3A", 1, true)) end

  local hostport, tail = after:match("^([^/?]*)(.*)$")
  local host, portpart
  if hostport:sub(1, 1) == "[" then
    host, portpart = hostport:match("^%[([^%]]*)%](.*)$")
    if not host then return bad(string.format("unclosed '[' in host '%s'", hostport)) end
  else
    host, portpart = hostport:match("^([^:]*)(.*)$")
  end
  if host == "" then return bad("no host after '@'") end
  if not host:match("^[%w%.%-_:%%]+$") then return bad(string.format("invalid host '%s'", host)) end
  local port = DEFAULT_PORT
  if portpart ~= "" then
    local p = portpart:match("^:(.*)$")
    if not p then return bad(string.format("unexpected '%s' after host '%s'", portpart, host)) end
    if p == "" then return bad("empty port after ':'") end
    if not p:match("^%d+$") then return bad(string.format("port '%s' is not a number", p)) end
    port = tonumber(p)
    if port < 1 or port > 65535 then return bad(string.format("port %s is out of range 1-65535", p)) end
  end

  local path, query = "", ""
  if tail ~= "" then
    path, query = tail:match("^/?([^?]*)%??(.*)$")
  end
  local database
  if path ~= "" then
    database = decode(path)
    if database:find("/", 1, true) then return bad(string.format("database name '%s' contains '/'", database)) end
  end
  local options, oerr = parse_options(query)
  if not options then return bad(oerr, true) end

  local password = login.password
  if opts and opts.password ~= nil then password = opts.password end
  return {
    scheme = scheme:lower(),
    user = login.user,
    password = password,
    account = login.account,
    role = login.role,
    login = login.login,
    host = host,
    port = port,
    database = database,
    options = options,
    masked = masked,
  }
end

-- format(u[, {password = true}]) -> URI string; the password is masked unless asked for.
function M.format(u, opts)
  local login = u.login or (u.account and (u.account .. "#" .. (u.user or ""))) or u.user or ""
  -- keep the login's '#' separators readable; a ':' in it is written %3A
  local userinfo = login:gsub("[^#]+", encode)
  if u.password ~= nil then
    userinfo = userinfo .. ":" .. ((opts and opts.password) and encode(u.password) or MASK)
  end
  local host = u.host or "localhost"
  if host:find(":", 1, true) then host = "[" .. host .. "]" end
  local s = string.format("%s://%s@%s:%d", u.scheme or "mysql", userinfo, host, u.port or DEFAULT_PORT)
  if u.database then s = s .. "/" .. encode(u.database) end
  if u.options and next(u.options) then
    local keys = {}
    for k in pairs(u.options) do keys[#keys + 1] = k end
    table.sort(keys)
    for i, k in ipairs(keys) do
      keys[i] = k:gsub("_", "-") .. "=" .. encode(tostring(u.options[k]))
    end
    s = s .. "?" .. table.concat(keys, "&")
  end
  return s
end

return M
