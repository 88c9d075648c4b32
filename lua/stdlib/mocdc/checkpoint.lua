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

return M
