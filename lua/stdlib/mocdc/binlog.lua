-- mocdc.binlog: MariaDB/MySQL row-based binlog stream (host/binlog.c).
--
--   local binlog = require("mocdc.binlog")
--   local s = assert(binlog.open{ host = "127.0.0.1", port = 3306, user = "repl", password = pw,
--                                 file = "mysql-bin.000003", pos = 4 })
--   while true do
--     local ev, err = s:next(10000)
--     if not ev then break end                          -- nil: EOF (blocking = false) or error
--     if ev.type == "table" then s:want(ev.db, ev.table, ev.db == "shop")
--     elseif ev.type == "need_schema" then s:set_schema(ev.db, ev.table, binlog.schema_columns(conn, ev.db, ev.table))
--     elseif ev.type == "rows" then sink(ev.batch)      -- a mocdc.batch, values in text-protocol form
--     elseif ev.type == "commit" then checkpoint(ev.file, ev.pos) end
--   end
--
-- Values are what a utf8mb4 connection SELECTs (time_zone '+00:00'): integers with their
-- sign, DECIMAL with every digit, FLOAT/DOUBLE formatted as the server does, TIME/DATETIME/
-- TIMESTAMP with exactly their fraction digits, BINARY(n) \0-padded, BIT as raw bytes, ENUM/SET
-- as their names, text of any charset converted to utf8mb4. The binlog cannot tell FLOAT(M,D)/
-- DOUBLE(M,D) decimals or ZEROFILL widths: pass set_schema(binlog.schema_columns(...)) at the
-- "table" event for tables that use them.
--
-- Events (one per next() call):
--   rows        db, table, batch, file, pos (end of the last rows event in the batch), ts,
--               more (true when the last event's rows continue in the next batch)
--   table       db, table              first sight of a table: answer with s:want(db, table, bool)
--                                      (no answer = wanted); rows of unwanted tables are skipped
--                                      undecoded
--   need_schema db, table, columns     the source logs no column names (binlog_row_metadata is not
--                                      FULL), or the table's column types changed since the last
--                                      set_schema: call s:set_schema before the next next()
--   gtid        gtid ("0-1-23"), file, pos, ts, standalone (DDL without COMMIT)
--   begin / commit (file, pos, ts, xid) / rollback
--   ddl         db, sql, file, pos, ts (any other statement: CREATE/ALTER/DROP/RENAME/TRUNCATE...)
--   statement   db, sql, ...           a DML statement logged in STATEMENT format (a session changed
--                                      binlog_format): its rows cannot be replicated
--   rotate      file, pos (artificial = true for the one the source sends at connect)
--   heartbeat   file, pos              the source is idle; the position is current (also returned
--                                      early when SIGINT/SIGTERM arrived during a long skip)
-- Methods: next([max_rows[, max_bytes]]) (defaults 10000 rows, 64 MiB), want(db, table, bool),
-- set_schema(db, table, columns), readable([timeout]) (would next() return without waiting for
-- the network?), position() -> file, pos, info() -> table, close().
-- Batches are native memory: batch:free() them when done (the stream also nudges the collector).
local lib = require("mocdc.binlog.lib")
local errors = require("mocdc.errors")

local M = { lib = lib, decode_value = lib.decode_value, format_real = lib.format_real }

-- A server_id for this process when none is given: high in the range, so it does
-- not collide with hand-numbered replicas (1, 2, 3...), and unique per process.
local function default_server_id()
  local ok, util = pcall(require, "mocdc.util.lib")
  local pid = ok and util.getpid() or math.random(1, 99999)
  return 4000000000 + (pid % 100000) * 10 + math.random(0, 9)
end

-- open{<connection: the fields conn.settings() returns (host, port, user, password,
--      unix_socket, charset, ssl_mode, ssl_ca, ssl_cert, ssl_key, connect_timeout,
--      read_timeout, write_timeout)>, server_id, file, pos, gtid, heartbeat (s, default 1),
--      blocking (default true)} -> stream | nil, msg, errno
-- The connection is opened by the same C opener as queries (host/connopts.c).
-- Without file (and gtid) the stream starts at the source's current position.
function M.open(opts)
  if type(opts) ~= "table" then error("binlog.open: options table expected", 2) end
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  o.server_id = o.server_id or default_server_id()
  if o.pos ~= nil then o.pos = tonumber(o.pos) end
  if o.port ~= nil then o.port = tonumber(o.port) end
  return lib.open(o)
end

local function first_row(conn, sql)
  local rows, cols_or_err, errno = conn:query(sql)
  if not rows then return nil, cols_or_err, errno end
  if type(rows) ~= "table" then return nil end
  return rows[1], cols_or_err
end

-- The source's current binlog position: {file=, pos=} | nil, msg[, errno].
-- (MySQL 8.4 renamed SHOW MASTER STATUS to SHOW BINARY LOG STATUS.)
function M.master_status(conn)
  local row, err, errno = first_row(conn, "SHOW MASTER STATUS")
  if not row and not errors.transient(errno) then row = first_row(conn, "SHOW BINARY LOG STATUS") end
  if not row then
    return nil, err or "SHOW MASTER STATUS returned nothing: the binary log is off on the source (log_bin)", errno
  end
  return { file = row[1], pos = tonumber(row[2]) }
end

-- Binary logs on the source, oldest first: array of {file=, size=}.
function M.binary_logs(conn)
  local rows, err, errno = conn:query("SHOW BINARY LOGS")
  if not rows then return nil, err, errno end
  local out = {}
  for _, r in ipairs(rows) do out[#out + 1] = { file = r[1], size = tonumber(r[2]) } end
  return out
end

-- Is the saved position p ({file, pos, gtid}) still a place in the binlog
-- history it was taken from? After RESET MASTER, a restore, or a failover to
-- another server with coinciding file names, the same file name and offset
-- name a different history: the offset may fall inside an event, or on an
-- event boundary with other transactions before it. MariaDB: the GTID state at
-- the offset (BINLOG_GTID_POS, NULL when it is not an event boundary) must hold
-- the GTID saved with the position (the last one before it). Elsewhere the
-- offset must still be an event boundary (SHOW BINLOG EVENTS ... FROM).
-- -> true | false, what is different ("is not an event boundary ...") | nil, error.
-- A file no longer on the source is left to the stream (purged: error 1236).
function M.check_history(conn, p)
  if not p or not p.file then return true end
  local logs = M.binary_logs(conn)
  local size
  for _, l in ipairs(logs or {}) do if l.file == p.file then size = l.size end end
  if not size then return true end
  local pos = tonumber(p.pos) or 4
  if size and pos > size then
    return false, string.format("is past the end of that file now (%d bytes)", size)
  end
  local lit = "'" .. conn:escape(p.file) .. "'"
  if conn.flavour == "mariadb" then
    local row, err = first_row(conn, string.format("SELECT BINLOG_GTID_POS(%s, %d)", lit, pos))
    if not row and err then return nil, "BINLOG_GTID_POS failed: " .. tostring(err) end
    local state = row and row[1]
    if type(state) ~= "string" then return false, "is not an event boundary of that file any more" end
    local g = type(p.gtid) == "string" and p.gtid:match("^(%d+)%-%d+%-%d+$") and p.gtid
    if g then
      local domain = g:match("^(%d+)%-")
      local now
      for e in state:gmatch("[^,]+") do
        if e == g then return true end
        if e:match("^(%d+)%-") == domain then now = e end
      end
      return false, now and ("is after gtid " .. now .. " now") or ("has no gtid of domain " .. domain .. " before it now")
    end
    return true
  end
  local rows = conn:query(string.format("SHOW BINLOG EVENTS IN %s FROM %d LIMIT 1", lit, pos))
  if not rows then return false, "is not an event boundary of that file any more" end
  return true
end

-- Values of an enum('a','b''c') / set(...) column type.
local function parse_values(column_type)
  local body = column_type:match("^%a+%((.*)%)")
  if not body then return nil end
  local out, i, n = {}, 1, #body
  while i <= n do
    local c = body:sub(i, i)
    if c == "'" then
      local buf = {}
      i = i + 1
      while i <= n do
        local ch = body:sub(i, i)
        if ch == "'" then
          if body:sub(i + 1, i + 1) == "'" then buf[#buf + 1] = "'"; i = i + 2
          else i = i + 1; break end
        elseif ch == "\\" and i < n then
          buf[#buf + 1] = body:sub(i + 1, i + 1); i = i + 2
        else
          buf[#buf + 1] = ch; i = i + 1
        end
      end
      out[#out + 1] = table.concat(buf)
    else
      i = i + 1
    end
  end
  return out
end
M._parse_values = parse_values

local BIN_TYPES = {
  binary = true, varbinary = true, tinyblob = true, blob = true, mediumblob = true, longblob = true,
  geometry = true, point = true, linestring = true, polygon = true, multipoint = true,
  multilinestring = true, multipolygon = true, geometrycollection = true,
}
local NUM_TYPES = {
  tinyint = true, smallint = true, mediumint = true, int = true, integer = true, bigint = true,
  decimal = true, numeric = true, float = true, double = true, real = true, year = true,
}

-- Columns of db.table from information_schema, in the form set_schema takes:
-- array of {name=, unsigned=, class=, charset=, enum_values=, set_values=, decimals=, zerofill=}.
-- (ENUM/SET values come back in the connection charset: use a utf8mb4 connection.)
function M.schema_columns(conn, db, tbl)
  local sql = string.format(
    "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, NUMERIC_SCALE, CHARACTER_SET_NAME FROM information_schema.COLUMNS " ..
    "WHERE TABLE_SCHEMA = '%s' AND TABLE_NAME = '%s' ORDER BY ORDINAL_POSITION",
    conn:escape(db), conn:escape(tbl))
  local rows, err, errno = conn:query(sql)
  if not rows then return nil, err, errno end
  if #rows == 0 then return nil, string.format("table `%s`.`%s` not found on the source", db, tbl) end
  local cols = {}
  for _, r in ipairs(rows) do
    local name, dtype, ctype, scale = r[1], r[2]:lower(), r[3]:lower(), r[4]
    local c = { name = name, unsigned = ctype:find("unsigned", 1, true) ~= nil }
    if dtype == "bit" then c.class = "bit"
    elseif NUM_TYPES[dtype] then c.class = "num"
    elseif BIN_TYPES[dtype] then c.class = "bin"
    else c.class = "str" end
    if type(r[5]) == "string" and c.class == "str" then c.charset = r[5] end
    if dtype == "enum" then c.enum_values = parse_values(r[3]) end
    if dtype == "set" then c.set_values = parse_values(r[3]) end
    if (dtype == "float" or dtype == "double" or dtype == "real") and ctype:find(",", 1, true) then
      c.decimals = tonumber(scale)
    end
    if ctype:find("zerofill", 1, true) then
      -- display width: INT(6) -> 6; DECIMAL(5,2) -> 6 (digits and the point); FLOAT(7,2) -> 7
      local m, d = ctype:match("%((%d+),?(%d*)%)")
      m, d = tonumber(m), tonumber(d)
      if m and (dtype == "decimal" or dtype == "numeric") and d and d > 0 then m = m + 1 end
      c.zerofill = m
    end
    cols[#cols + 1] = c
  end
  return cols
end

return M
