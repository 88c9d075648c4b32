-- One error policy for the Lua layer: user-facing failures are raised as
-- error objects carrying one clear line; the CLI prints it and exits non-zero.
local M = {}

local Err = {}
Err.__index = Err
Err.__tostring = function(e) return e.msg end

-- new(msg[, code]): the error object raise() raises, to hand on first.
function M.new(msg, code) return setmetatable({ msg = msg, code = code or 1 }, Err) end

-- raise(msg[, code]): one line naming the culprit and what to do.
function M.raise(msg, code)
  error(M.new(msg, code), 0)
end

function M.is(e) return getmetatable(e) == Err end

-- Message of any error value (error object, string, other).
function M.message(e)
  if getmetatable(e) == Err then return e.msg end
  if type(e) == "string" then return e end
  return tostring(e)
end

-- check(value, msg, ...): like assert for nil,msg returns; raises `prefix: msg`.
function M.check(prefix, ok, msg, ...)
  if ok == nil or ok == false then
    M.raise(prefix and (prefix .. ": " .. tostring(msg)) or tostring(msg))
  end
  return ok, msg, ...
end

-- A connection refused while setting up TLS (errno 2026, CR_SSL_CONNECTION_ERROR:
-- a wrong CA, a certificate for another host, an unreadable ssl-ca file, a
-- server without TLS for ssl-mode require) needs the configuration fixed:
-- exit 2 (usage or configuration), never retried. Other failures to connect
-- are runtime errors (exit 1; the server may be restarting).
local CONFIG_ERRNO = { [2026] = true }

-- open_failed(msg, errno[, code]): raise the failure of conn.open / binlog.open;
-- code (default 1) for the runtime ones.
function M.open_failed(msg, errno, code)
  M.raise(msg, CONFIG_ERRNO[errno] and 2 or code or 1)
end

local RETRYABLE = { [1205] = true, [1213] = true, [2006] = true, [2013] = true, [2003] = true, [1043] = true,
  [2002] = true, [2055] = true, [1053] = true, [1927] = true }
local PERMANENT = { [1045] = true, [1044] = true, [1049] = true, [1142] = true, [1227] = true, [2026] = true }

-- retryable(e): a transient failure worth retrying with backoff (lost
-- connection, deadlock, lock wait timeout, server restarting), as opposed to
-- one that needs the user (access denied, bad data, missing object).
function M.retryable(e)
  if type(e) == "table" and RETRYABLE[e.code] then return true end
  if type(e) == "table" and PERMANENT[e.code] then return false end
  if type(e) == "table" and e.code == 2 then return false end -- a configuration error (open_failed)
  local m = (type(e) == "table" and type(e.msg) == "string") and e.msg or M.message(e)
  if m:find("Access denied", 1, true) then return false end
  for _, pat in ipairs({ "Lost connection", "server has gone away", "Can't connect", "Connection refused",
    "Server shutdown in progress", "Connection was killed", "Deadlock found", "Lock wait timeout",
    "cannot connect to", "Connection reset", "is closed" }) do
    if m:find(pat, 1, true) then return true end
  end
  return false
end

return M
