-- The task state store: a key/value store, local SQLite by default
-- ($MOCDC_HOME/state.db or --state-dir), or a table in a MySQL-protocol
-- database (--state-uri) so several workers can share it.
-- Keys: task/<id>/config (written by the CLI), task/<id>/desired (CLI:
-- running|paused|dropped), task/<id>/status (written by the task's worker:
-- state starting|running|stopped, pid, err, checkpoint, dead_letters, ...).
-- Below the store: that layout (key, get_json, tasks, find), opening the
-- store a command's flags name, and the seed's time format.
local cjson = require("cjson")
local checkpoint = require("mocdc.checkpoint")
local errors = require("mocdc.errors")
local util = require("mocdc.util.lib")

local M = {}

local Remote = {}
Remote.__index = Remote

local function q(self, v) return "'" .. self.c:escape(v) .. "'" end

-- Lost connection to the shared store (a "connection" error of the one
-- transient table, errors.transient, or a connection already closed): reconnect
-- once and run the statement again (every statement here is idempotent).
local function run(self, method, sql_of)
  local ok, sql = pcall(sql_of) -- escaping raises on a closed connection
  local res, err, code, sqlstate
  if ok then res, err, code, sqlstate = self.c[method](self.c, sql) else res, err, code = nil, tostring(sql), 2006 end
  local gone = res == nil and (errors.transient(code, sqlstate) == "connection" or not self.c:is_open())
  if gone and self.uri then
    local c = require("mocdc.conn").open(self.uri, { role = "state store" })
    if c then
      pcall(self.c.close, self.c)
      self.c = c
      res, err, code = self.c[method](self.c, sql_of())
    end
  end
  return res, err, code
end

function Remote:get(k)
  local rows, err = run(self, "query", function() return "SELECT v FROM mocdc.state WHERE k = " .. q(self, k) end)
  if not rows then return nil, err end
  return rows[1] and rows[1][1] or nil
end

function Remote:set(k, v)
  local ok, err = run(self, "exec", function()
    return "REPLACE INTO mocdc.state (k, v) VALUES (" .. q(self, k) .. ", " .. q(self, tostring(v)) .. ")"
  end)
  if not ok then return nil, err end
  return true
end

function Remote:set_many(kv)
  if next(kv) == nil then return true end
  local ok, err = run(self, "exec", function()
    local vals = {}
    for k, v in pairs(kv) do vals[#vals + 1] = "(" .. q(self, k) .. ", " .. q(self, tostring(v)) .. ")" end
    return "REPLACE INTO mocdc.state (k, v) VALUES " .. table.concat(vals, ", ")
  end)
  if not ok then return nil, err end
  return true
end

function Remote:delete(k)
  local ok, err = run(self, "exec", function() return "DELETE FROM mocdc.state WHERE k = " .. q(self, k) end)
  if not ok then return nil, err end
  return true
end

function Remote:delete_prefix(p)
  local like = p:gsub("[%%_\\]", "\\%0") .. "%"
  local n, err = run(self, "exec", function() return "DELETE FROM mocdc.state WHERE k LIKE " .. q(self, like) end)
  if not n then return nil, err end
  return n
end

function Remote:items(p)
  p = p or ""
  local like = p:gsub("[%%_\\]", "\\%0") .. "%"
  local rows, err = run(self, "query", function() return "SELECT k, v FROM mocdc.state WHERE k LIKE " .. q(self, like) end)
  if not rows then return nil, err end
  local out = {}
  for _, r in ipairs(rows) do out[r[1]] = r[2] end
  return out
end

function Remote:keys(p)
  local items = self:items(p) or {}
  local out = {}
  for k in pairs(items) do out[#out + 1] = k end
  table.sort(out)
  return out
end

function Remote:close()
  if self.c then self.c:close() self.c = nil end
end

function M.dir(o)
  if o and o.state_dir then return o.state_dir end
  return require("mocdc.pipeline.job").home()
end

-- open{state_dir=, state_uri=} -> store (raises a clear error)
function M.open(o)
  o = o or {}
  if o.state_uri then
    local c, err = require("mocdc.conn").open(o.state_uri, { role = "state store" })
    if not c then errors.raise(err, 2) end
    local ok, e2 = c:exec("CREATE DATABASE IF NOT EXISTS mocdc")
    if ok then ok, e2 = c:exec("CREATE TABLE IF NOT EXISTS mocdc.state (k VARCHAR(255) NOT NULL PRIMARY KEY, v LONGTEXT NOT NULL)") end
    if not ok then errors.raise("state store " .. c.label .. ": " .. tostring(e2), 2) end
    return setmetatable({ c = c, uri = o.state_uri, remote = true }, Remote)
  end
  local dir = M.dir(o)
  local path = dir .. "/state.db"
  local fresh = not util.exists(path)
  local store, err = checkpoint.open(path)
  if not store then errors.raise(string.format("state directory %s: %s", dir, err), 2) end
  -- task configs hold the endpoints' credentials: owner-only
  if fresh then os.execute("chmod 600 '" .. path:gsub("'", "'\\''") .. "' 2>/dev/null") end
  return store
end

-- The content of a file named by --<flag>, without its trailing newlines
-- (password files, --state-uri-file).
function M.read_file_trim(flag, path)
  local fh, err = io.open(path)
  if not fh then errors.raise(string.format("--%s: cannot read password file: %s", flag, tostring(err)), 2) end
  local s = fh:read("*a")
  fh:close()
  return (s:gsub("[\r\n]+$", ""))
end

-- --state-uri, or --state-uri-file (a file holding the URI: keeps its
-- password out of `ps`; workers always get it this way).
function M.uri_of(f)
  if f["state-uri-file"] then return M.read_file_trim("state-uri-file", f["state-uri-file"]) end
  return f["state-uri"]
end

-- The store a command's flags name (--state-dir, --state-uri, --state-uri-file).
function M.open_flags(f)
  return M.open({ state_dir = f["state-dir"], state_uri = M.uri_of(f) })
end

function M.key(id, what) return "task/" .. id .. "/" .. what end

-- The value at k decoded from JSON; nil when absent or not JSON.
function M.get_json(st, k)
  local v = st:get(k)
  if v == nil then return nil end
  local ok, t = pcall(cjson.decode, v)
  return ok and t or nil
end

-- The configs of every task (of one owner, login@host:port, when given), by id.
function M.tasks(st, owner)
  local out = {}
  local items, err = st:items("task/")
  if not items then errors.raise("cannot read the state store: " .. tostring(err)) end
  for k, v in pairs(items) do
    local id = k:match("^task/([^/]+)/config$")
    if id then
      local cfg = cjson.decode(v)
      if not owner or cfg.owner == owner then out[#out + 1] = cfg end
    end
  end
  table.sort(out, function(a, b) return a.id < b.id end)
  return out
end

function M.find(st, owner, name)
  for _, cfg in ipairs(M.tasks(st, owner)) do
    if cfg.name == name then return cfg end
  end
  return nil
end

-- Go-style timestamp like the seed's (task show, err-msg): 2024-10-29 16:43:00.318404 +0000 UTC
function M.go_time(t)
  local sec = math.floor(t)
  return os.date("!%Y-%m-%d %H:%M:%S", sec) .. string.format(".%06d +0000 UTC", math.floor((t - sec) * 1e6))
end

return M
