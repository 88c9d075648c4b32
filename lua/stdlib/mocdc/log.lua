-- Logging with UTC timestamps to stderr; every message passes through the
-- password mask so a URI with a password never reaches a log.
local uri = require("mocdc.uri")
local util = require("mocdc.util.lib")
local M = { level = os.getenv("MOCDC_LOG_LEVEL") or "info", out = io.stderr }

local LEVELS = { debug = 1, info = 2, warn = 3, error = 4, quiet = 5 }

-- Mask the password of anything that looks like a URI with credentials
-- (scheme://user:pass@, up to the token's last '@'): everything after the
-- user part's first ':' (mocdc.uri's rule).
function M.mask(s)
  s = tostring(s)
  s = s:gsub("(%a[%w+.-]*://)([^%s]*)@", function(scheme, cred)
    return scheme .. uri.mask_userinfo(cred) .. "@"
  end)
  return s
end

function M.timestamp(t)
  t = t or util.now()
  local sec = math.floor(t)
  return os.date("!%Y-%m-%dT%H:%M:%S", sec) .. string.format(".%03dZ", math.floor((t - sec) * 1000))
end

local function emit(level, fmt, ...)
  if LEVELS[level] < (LEVELS[M.level] or 2) then return end
  local msg = select("#", ...) > 0 and string.format(fmt, ...) or tostring(fmt)
  M.out:write(M.timestamp(), " ", level:upper(), " ", M.mask(msg), "\n")
  M.out:flush()
end

function M.debug(...) emit("debug", ...) end
function M.info(...) emit("info", ...) end
function M.warn(...) emit("warn", ...) end
function M.error(...) emit("error", ...) end

return M
