-- One error policy for the Lua layer: user-facing failures are raised as
-- error objects carrying one clear line; the CLI prints it and exits non-zero.
local M = {}

local Err = {}
Err.__index = Err
Err.__tostring = function(e) return e.msg end

-- raise(msg[, code]): one line naming the culprit and what to do.
function M.raise(msg, code)
  error(setmetatable({ msg = msg, code = code or 1 }, Err), 0)
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

return M
