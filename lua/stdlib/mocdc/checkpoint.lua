-- mocdc.checkpoint: durable key/value store for pipeline checkpoints, over
-- mocdc.checkpoint.lib (SQLite, WAL, synchronous=FULL; one table kv(key, value)).
--
--   local checkpoint = require "mocdc.checkpoint"
--   local store, err = checkpoint.open("/var/lib/mocdc/p1/checkpoint.db") -- creates parent dirs
--     (optional 2nd argument: SQLite busy timeout in ms, default 10000)
--   store = checkpoint.open_location("/var/lib/mocdc/p1")                -- <dir>/checkpoint.db
--   store:get(key)              --> string | nil          (nil, msg, code on a SQLite failure)
--   store:set(key, value)       --> true | nil, msg, code  (value: string or number)
--   store:set_many{k = v, ...}  --> true | nil, msg, code  (one transaction: all or nothing)
--   store:delete(key)           --> true | nil, msg, code
--   store:delete_prefix(p)      --> number of keys deleted | nil, msg, code
--   store:keys([prefix])        --> sorted array of keys
--   store:items([prefix])       --> { key = value } for keys starting with prefix
--   store:close()               -- idempotent; __gc closes too
--   lk = checkpoint.lock_location(dir, holder)  -- one writer per location: <dir>/lock (flock);
--     nil, "in use by <holder of the running one>", util.EWOULDBLOCK when held; lk:close() releases
local lib = require("mocdc.checkpoint.lib")
local util = require("mocdc.util.lib")

local M = {}

M.FILE_NAME = "checkpoint.db"

local function dirname(path)
  local d = path:match("^(.*)/[^/]*$")
  if d == nil then return "." end
  if d == "" then return "/" end
  return d
end

function M.open(path, busy_timeout_ms)
  if type(path) ~= "string" or path == "" then
    error("bad argument #1 to 'open' (checkpoint path expected, got " .. type(path) .. ")", 2)
  end
  local dir = dirname(path)
  if not util.exists(dir) then
    local ok, err = util.mkdir_p(dir)
    if not ok then return nil, "cannot open checkpoint " .. path .. ": " .. err end
  end
  return lib.open(path, busy_timeout_ms)
end

-- The store of a pipeline: <location>/checkpoint.db.
function M.open_location(location)
  if type(location) ~= "string" or location == "" then
    error("bad argument #1 to 'open_location' (directory expected, got " .. type(location) .. ")", 2)
  end
  return M.open(location:gsub("/+$", "") .. "/" .. M.FILE_NAME)
end

-- One writer per checkpoint location: an exclusive lock on <location>/lock
-- whose content names the holder (pid, host, since when) for the error of the
-- next one. Released by lk:close(), its __gc, or the end of the process.
M.LOCK_NAME = "lock"

function M.lock_location(location, holder)
  local dir = location:gsub("/+$", "")
  if not util.exists(dir) then
    local ok, err = util.mkdir_p(dir)
    if not ok then return nil, "cannot create " .. dir .. ": " .. err end
  end
  local path = dir .. "/" .. M.LOCK_NAME
  local lk, err, code = util.lock(path, holder)
  if lk then return lk end
  if code == util.EWOULDBLOCK then
    local f = io.open(path, "rb")
    local who = f and f:read("*a") or ""
    if f then f:close() end
    return nil, "in use by " .. (who ~= "" and who or "another process"), code
  end
  return nil, "cannot lock " .. path .. ": " .. tostring(err), code
end

return M
