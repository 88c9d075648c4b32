-- mocdc.conn: connections to MySQL-protocol servers (MatrixOne, MySQL, MariaDB).
--
--   local conn = require("mocdc.conn")
--   local c, err = conn.open("mysql://root:pw@127.0.0.1:3306", { role = "sink", local_infile = true })
--   c.flavour                          -- "matrixone" | "mariadb" | "mysql"
--   c:query(sql) / c:exec(sql) / c:escape(s) / c:stream(sql) / c:load_from(cursor, sql, opts)
--   c:send(sql) then c:reap_query()    -- a statement in flight while others run
--   c:query_one(sql), c:variable(name), c:close()
--
-- Every session runs with SET NAMES <charset>, time_zone '+00:00' (TIMESTAMP never
-- shifts), and the server's sql_mode minus NO_BACKSLASH_ESCAPES (our escaping
-- relies on backslashes) plus STRICT_TRANS_TABLES when no strict mode is on.
-- Failures are `nil, msg[, errno, sqlstate]`; messages name role and
-- user@host:port, never the password.
local lib = require("mocdc.conn.lib")
local uri = require("mocdc.uri")

local M = { NULL = lib.NULL }

local DEFAULT_CONNECT_TIMEOUT = 10
-- a streaming source whose reader stalls (slow sink) must not be cut after the
-- server's default 60 s
local SOURCE_NET_WRITE_TIMEOUT = 3600

local Conn = {}
Conn.__index = Conn

local function pick(...)
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if v ~= nil then return v end
  end
  return nil
end

-- settings(uri_or_table, opts) -> the connect table of the C opener
-- (host/connopts.c: conn.lib.connect and binlog.lib.open take it) | nil, msg.
-- From a URI string or a table ({host=, port=, user=, password=, database=,
-- unix_socket=, options={...}} or the same flat); opts as for open().
function M.settings(target, opts)
  opts = opts or {}
  local cfg
  if type(target) == "string" then
    local u, err = uri.parse(target, { password = opts.password })
    if not u then
      if opts.role then err = err:gsub("^invalid URI", "invalid " .. opts.role .. " URI") end
      return nil, err
    end
    cfg = u
  elseif type(target) == "table" then
    cfg = target
  else
    error("bad argument #1 to 'open' (URI string or table expected, got " .. type(target) .. ")", 3)
  end
  local o = cfg.options or {}
  local function opt(k) return pick(opts[k], cfg[k], o[k]) end
  return {
    host = cfg.host or "127.0.0.1",
    port = cfg.port or 3306,
    user = cfg.login or cfg.user,
    password = pick(opts.password, cfg.password),
    database = cfg.database,
    unix_socket = pick(cfg.unix_socket, o.socket),
    charset = opt("charset") or "utf8mb4",
    ssl_mode = opt("ssl_mode"),
    ssl_ca = opt("ssl_ca"),
    ssl_cert = opt("ssl_cert"),
    ssl_key = opt("ssl_key"),
    connect_timeout = opt("connect_timeout") or DEFAULT_CONNECT_TIMEOUT,
    read_timeout = opt("read_timeout"),
    write_timeout = opt("write_timeout"),
    local_infile = opts.local_infile and true or false,
  }
end

local function detect_flavour(h)
  local info = h:server_info()
  if info:find("MatrixOne", 1, true) then return "matrixone" end
  if info:find("MariaDB", 1, true) then return "mariadb" end
  local rows = h:query("SELECT version()")
  if type(rows) == "table" and rows[1] and type(rows[1][1]) == "string" then
    if rows[1][1]:find("MatrixOne", 1, true) then return "matrixone" end
    if rows[1][1]:find("MariaDB", 1, true) then return "mariadb" end
  end
  return "mysql"
end

-- The server's sql_mode with NO_BACKSLASH_ESCAPES off and a strict mode on.
function M.fix_sql_mode(mode)
  local out, strict = {}, false
  for m in (mode or ""):gmatch("[^,%s]+") do
    local u = m:upper()
    if u ~= "NO_BACKSLASH_ESCAPES" then out[#out + 1] = m end
    if u == "STRICT_TRANS_TABLES" or u == "STRICT_ALL_TABLES" then strict = true end
  end
  if not strict then out[#out + 1] = "STRICT_TRANS_TABLES" end
  return table.concat(out, ",")
end

local function setup_session(c, charset, role)
  local h = c.h
  local function run(sql)
    local ok, err, errno, sqlstate = h:query(sql)
    if not ok then return nil, err, errno, sqlstate end
    return ok
  end
  local ok, err, errno, sqlstate = run("SET NAMES " .. charset)
  if not ok then return nil, err, errno, sqlstate end
  ok, err, errno, sqlstate = run("SET time_zone = '+00:00'")
  if not ok then return nil, err, errno, sqlstate end
  local rows
  rows, err, errno, sqlstate = h:query("SELECT @@SESSION.sql_mode")
  if rows and type(rows[1]) == "table" then
    local cur = rows[1][1] == lib.NULL and "" or rows[1][1]
    local want = M.fix_sql_mode(cur)
    if want ~= cur then
      ok, err, errno, sqlstate = run("SET SESSION sql_mode = '" .. h:escape(want) .. "'")
      if not ok and c.flavour ~= "matrixone" then return nil, err, errno, sqlstate end
    end
  elseif c.flavour ~= "matrixone" then
    return nil, err, errno, sqlstate
  end
  if role == "source" and c.flavour ~= "matrixone" then
    run("SET SESSION net_write_timeout = " .. SOURCE_NET_WRITE_TIMEOUT) -- best effort
  end
  return true
end

local quote_ident = require("mocdc.sqlbuild").quote_ident -- the one quoting rule

-- The LOAD DATA statement for load_from(): `tbl` is already quoted
-- (`db`.`t`), `columns` the array stream() returned ({name=, class=}).
-- Field/line format spelled out (servers differ in their defaults), bytes
-- taken as they are (CHARACTER SET binary), BIT columns through a user
-- variable. opts.mode: nil (plain: LOCAL makes duplicates warnings),
-- "replace" or "ignore".
function M.load_data_sql(tbl, columns, opts)
  local mode = opts and opts.mode
  local list, sets = {}, {}
  for i, c in ipairs(columns) do
    if c.class == "bit" then
      list[i] = "@v" .. i
      sets[#sets + 1] = quote_ident(c.name) .. " = CAST(@v" .. i .. " AS UNSIGNED)"
    else
      list[i] = quote_ident(c.name)
    end
  end
  local sql = "LOAD DATA LOCAL INFILE 'mocdc://stream' " ..
    (mode == "replace" and "REPLACE " or mode == "ignore" and "IGNORE " or "") ..
    "INTO TABLE " .. tbl .. " CHARACTER SET binary" ..
    " FIELDS TERMINATED BY '\\t' ENCLOSED BY '' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' STARTING BY ''" ..
    " (" .. table.concat(list, ", ") .. ")"
  if #sets > 0 then sql = sql .. " SET " .. table.concat(sets, ", ") end
  return sql
end

-- open(uri_or_table, opts) -> conn | nil, msg, errno, sqlstate
-- opts: role ("source"|"sink", for messages), password (overrides the URI's),
--       local_infile (bool, needed by load_from on a sink), and any URI option
--       (charset, ssl_mode, ssl_ca, ssl_cert, ssl_key, connect_timeout,
--       read_timeout, write_timeout) to override it. A failure to set up TLS
--       (errno 2026: wrong CA, unreadable ssl-ca, no TLS on the server) is a
--       configuration error: errors.open_failed() exits 2 for it.
function M.open(target, opts)
  opts = opts or {}
  local p, perr = M.settings(target, opts)
  if not p then return nil, perr end
  local role = opts.role
  local h, err, errno, sqlstate = lib.connect(p)
  if not h then
    if role then err = err:gsub("^cannot connect to ", "cannot connect to " .. role .. " ") end
    return nil, err, errno, sqlstate
  end
  local who = string.format("%s@%s:%s", p.user or "", p.host, tostring(p.port))
  if p.unix_socket then who = string.format("%s@%s", p.user or "", p.unix_socket) end
  local c = setmetatable({
    h = h,
    role = role,
    who = who,
    label = who, -- used in messages by the pipeline layer
    database = p.database,
    charset = p.charset,
  }, Conn)
  c.flavour = detect_flavour(h)
  local ok
  ok, err, errno, sqlstate = setup_session(c, p.charset, role)
  if not ok then
    h:close()
    return nil, string.format("cannot set up the session on %s%s: %s", role and (role .. " ") or "", who, err),
      errno, sqlstate
  end
  return c
end

-- forwarded to the native handle
function Conn:query(sql) return self.h:query(sql) end
function Conn:exec(sql) return self.h:exec(sql) end
function Conn:escape(s) return self.h:escape(s) end
function Conn:stream(sql) return self.h:stream(sql) end
-- send(sql) starts a statement without waiting; reap_query() returns what
-- query() would (rows, columns | nil, msg...): several connections can then
-- run statements at the same time (mocdc.engine.snapdiff_ranges's parallel checksums)
function Conn:send(sql) return self.h:send(sql) end
function Conn:reap_query() return self.h:reap_query() end
function Conn:reap() return self.h:reap() end -- affected rows (a result set is discarded)
function Conn:load_from(cursor, sql, opts) return self.h:load_from(cursor, sql, opts) end
function Conn:server_info() return self.h:server_info() end
function Conn:server_version() return self.h:server_version() end
function Conn:thread_id() return self.h:thread_id() end
function Conn:ping() return self.h:ping() end
function Conn:is_open() return self.h:is_open() end
function Conn:close() return self.h:close() end

function Conn:__tostring()
  return string.format("mocdc.conn(%s%s, %s)", self.role and (self.role .. " ") or "", self.who, self.flavour)
end

-- First row of a result (array; NULL = conn.NULL) and the columns; nil when
-- there is no row; nil, msg, errno, sqlstate on failure.
function Conn:query_one(sql)
  local rows, cols, errno, sqlstate = self.h:query(sql)
  if rows == nil then return nil, cols, errno, sqlstate end
  if type(rows) ~= "table" then return nil, "query_one: the statement returned no result set" end
  if rows[1] == nil then return nil end
  return rows[1], cols
end

-- Value of a system variable as a string; nil when it is NULL; nil, msg on failure.
function Conn:variable(name)
  if type(name) ~= "string" or not name:match("^[%a_][%w_]*$") then
    error("bad argument #1 to 'variable' (variable name expected, got " .. tostring(name) .. ")", 2)
  end
  local row, err, errno, sqlstate = self:query_one("SELECT @@" .. name)
  if not row then return nil, err, errno, sqlstate end
  if row[1] == lib.NULL then return nil end
  return row[1]
end

return M
