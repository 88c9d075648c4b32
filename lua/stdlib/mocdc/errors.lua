-- One error policy for the Lua layer: user-facing failures are raised as
-- error objects carrying one clear line; the CLI prints it and exits non-zero.
--
-- The error shape: { msg = <one line>, exit = <exit code: 1 runtime, 2 usage
-- or configuration, 130 interrupted>, errno = <MySQL errno or nil>, sqlstate =
-- <SQLSTATE or nil> } (`code` is the same as `exit`, kept for older callers).
-- A server failure (the C layer's `nil, msg, errno, sqlstate`) is raised with
-- its errno and sqlstate unchanged, so the retry decision (retryable below) is
-- taken from them, never from the message text.
local M = {}

local Err = {}
Err.__index = Err
Err.__tostring = function(e) return e.msg end

-- new(msg[, exit]) or new(msg, {exit=, errno=, sqlstate=}): the error object
-- raise() raises, to hand on first.
function M.new(msg, how)
  local exit, errno, sqlstate = 1, nil, nil
  if type(how) == "table" then
    exit, errno, sqlstate = how.exit or 1, tonumber(how.errno), how.sqlstate
  elseif how ~= nil then
    exit = how
  end
  return setmetatable({ msg = msg, exit = exit, code = exit, errno = errno, sqlstate = sqlstate }, Err)
end

-- raise(msg[, exit]) or raise(msg, {exit=, errno=, sqlstate=}): one line
-- naming the culprit and what to do.
function M.raise(msg, how)
  error(M.new(msg, how), 0)
end

-- raise_sql(msg, errno, sqlstate): a server / client-library failure, exit 1.
function M.raise_sql(msg, errno, sqlstate)
  M.raise(msg, { errno = errno, sqlstate = sqlstate })
end

function M.is(e) return getmetatable(e) == Err end

-- Message of any error value (error object, string, other).
function M.message(e)
  if getmetatable(e) == Err then return e.msg end
  if type(e) == "string" then return e end
  return tostring(e)
end

-- A connection refused while setting up TLS (errno 2026, CR_SSL_CONNECTION_ERROR:
-- a wrong CA, a certificate for another host, an unreadable ssl-ca file, a
-- server without TLS for ssl-mode require) needs the configuration fixed:
-- exit 2 (usage or configuration), never retried. Other failures to connect
-- are runtime errors (exit 1; the server may be restarting).
local CONFIG_ERRNO = { [2026] = true }

-- open_failed(msg, errno[, exit[, sqlstate]]): raise the failure of conn.open /
-- binlog.open, errno and sqlstate kept; exit (default 1) for the runtime ones.
function M.open_failed(msg, errno, exit, sqlstate)
  M.raise(msg, { exit = CONFIG_ERRNO[errno] and 2 or exit or 1, errno = errno, sqlstate = sqlstate })
end

-- The one table of transient failures: retried with backoff (mocdc run,
-- tasks, subscriptions); "connection" ones also mean the connection is gone
-- and must be opened again (the state store reconnects at once on them).
-- Everything else needs the user (access denied, bad data, missing object).
local TRANSIENT = {
  [1205] = "lock",       -- ER_LOCK_WAIT_TIMEOUT
  [1213] = "lock",       -- ER_LOCK_DEADLOCK
  [1043] = "server",     -- ER_HANDSHAKE_ERROR (server starting / overloaded)
  [1053] = "server",     -- ER_SERVER_SHUTDOWN
  [1927] = "connection", -- ER_CONNECTION_KILLED
  [2002] = "connection", -- CR_CONNECTION_ERROR (socket)
  [2003] = "connection", -- CR_CONN_HOST_ERROR (server down / restarting)
  [2006] = "connection", -- CR_SERVER_GONE_ERROR (also: a conn closed after a failure)
  [2013] = "connection", -- CR_SERVER_LOST
  [2055] = "connection", -- CR_SERVER_LOST_EXTENDED
}
-- SQLSTATEs that are transient whatever the errno (other servers' codes):
-- 40001 serialization failure / deadlock, 08S01 communication link failure.
local TRANSIENT_STATE = { ["40001"] = "lock", ["08S01"] = "connection" }

-- transient(errno[, sqlstate]) -> "lock" | "server" | "connection" | nil
function M.transient(errno, sqlstate)
  return TRANSIENT[tonumber(errno) or -1] or (sqlstate and TRANSIENT_STATE[sqlstate]) or nil
end

-- retryable(e): e is an error object (or any table with errno / sqlstate):
-- a transient failure worth retrying with backoff.
function M.retryable(e)
  if type(e) ~= "table" then return false end
  return M.transient(e.errno, e.sqlstate) ~= nil
end

return M
