-- The task state store: a key/value store, local SQLite by default
-- ($MOCDC_HOME/state.db or --state-dir), or a table in a MySQL-protocol
-- database (--state-uri) so several workers can share it.
-- Keys: task/<id>/config (written by the CLI), task/<id>/desired (CLI:
-- running|paused), task/<id>/status (written by the task's worker).
local checkpoint = require("mocdc.checkpoint")
local errors = require("mocdc.errors")

local M = {}

local Remote = {}
Remote.__index = Remote

local function q(self, v) return "'" .. self.c:escape(v) .. "'" end

function Remote:get(k)
  local rows, err = self.c:query("SELECT v FROM mocdc.state WHERE k = " .. q(self, k))
  if not rows then return nil, err end
  return rows[1] and rows[1][1] or nil
end

function Remote:set(k, v)
  local ok, err = self.c:exec("REPLACE INTO mocdc.state (k, v) VALUES (" .. q(self, k) .. ", " .. q(self, tostring(v)) .. ")")
  if not ok then return nil, err end
  return true
end

function Remote:set_many(kv)
  local vals = {}
  for k, v in pairs(kv) do vals[#vals + 1] = "(" .. q(self, k) .. ", " .. q(self, tostring(v)) .. ")" end
  if #vals == 0 then return true end
  local ok, err = self.c:exec("REPLACE INTO mocdc.state (k, v) VALUES " .. table.concat(vals, ", "))
  if not ok then return nil, err end
  return true
end

function Remote:delete(k)
  local ok, err = self.c:exec("DELETE FROM mocdc.state WHERE k = " .. q(self, k))
  if not ok then return nil, err end
  return true
end

function Remote:delete_prefix(p)
  local like = p:gsub("[%%_\\]", "\\%0") .. "%"
  local n, err = self.c:exec("DELETE FROM mocdc.state WHERE k LIKE " .. q(self, like))
  if not n then return nil, err end
  return n
end

function Remote:items(p)
  p = p or ""
  local like = p:gsub("[%%_\\]", "\\%0") .. "%"
  local rows, err = self.c:query("SELECT k, v FROM mocdc.state WHERE k LIKE " .. q(self, like))
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
  return require("mocdc.runner").home()
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
    return setmetatable({ c = c, remote = true }, Remote)
  end
  local dir = M.dir(o)
  local store, err = checkpoint.open(dir .. "/state.db")
  if not store then errors.raise(string.format("state directory %s: %s", dir, err), 2) end
  return store
end

return M
