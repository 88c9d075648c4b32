-- Validation of numeric pipeline options (one message for all of them).
local errors = require("mocdc.errors")
local M = {}

-- number(o, name, default[, min]): o[name] as a number >= min (default 1);
-- absent or "" gives default; anything else is one clear configuration error.
function M.number(o, name, default, min)
  local v = o[name]
  if v == nil or v == "" then return default end
  local n = tonumber(v)
  if not n or n < (min or 1) then
    errors.raise(string.format("option %s = '%s' must be a number >= %s", name, tostring(v), tostring(min or 1)), 2)
  end
  return n
end

return M
