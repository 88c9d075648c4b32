-- A MatrixOne stand-in for specs: wraps a MariaDB connection (mocdc.conn) and
-- rewrites the MatrixOne statements the MatrixOne source sends, so that its
-- whole flow runs against a real server. Tables must be created WITH SYSTEM
-- VERSIONING: a snapshot is a UTC timestamp, `t{SNAPSHOT = 's'}` becomes
-- `t FOR SYSTEM_TIME AS OF TIMESTAMP '<ts>'`, and DATA BRANCH DIFF is computed
-- with joins of two such reads. Only what mocdc.engine.matrixone sends is
-- understood (the golden spec pins those statements).
--
--   local emu = require("spec.helpers.mo_emulator")
--   local c = emu.wrap(real_conn, { branch_diff = true, pitr = {...rows}, snapshots = shared_table })
--   c.snapshots  -- name -> ts;  c.log -- statements received
-- o.snapshots_file: the snapshots are also kept in this JSON file, so that
-- successive processes (`mocdc run` of an emulated pipeline) share them.
local cjson = require("cjson")
local M = {}

function M.wrap(real, o)
  o = o or {}
  local self = { real = real, flavour = "matrixone", label = real.label .. " (MatrixOne emulated)",
    snapshots = o.snapshots or {},
    log = {}, o = o, who = real.who }
  local mt = {}
  mt.__index = function(_, k)
    local f = real[k]
    if type(f) == "function" then return function(_, ...) return f(real, ...) end end
    return f
  end
  setmetatable(self, mt)
  local function persist()
    if not o.snapshots_file then return end
    local f = assert(io.open(o.snapshots_file, "w"))
    f:write(cjson.encode(self.snapshots))
    f:close()
  end
  if o.snapshots_file then
    local f = io.open(o.snapshots_file)
    if f then
      local saved = cjson.decode(f:read("*a"))
      f:close()
      for k, v in pairs(saved) do self.snapshots[k] = v end
    end
  end

  local function ts_of(name)
    local ts = self.snapshots[name]
    if not ts then error("emulator: unknown snapshot " .. tostring(name)) end
    return ts
  end
  -- `db`.`t`{SNAPSHOT = 'x'} -> `db`.`t` FOR SYSTEM_TIME AS OF TIMESTAMP 'ts'
  local function rewrite_refs(s)
    -- MariaDB lists system-versioned tables as 'SYSTEM VERSIONED', not 'BASE TABLE'
    s = s:gsub("table_type = 'BASE TABLE'", "table_type IN ('BASE TABLE', 'SYSTEM VERSIONED')")
    return (s:gsub("(`[^`]+`%.`[^`]+`){SNAPSHOT = '([^']+)'}", function(ref, name)
      return ref .. " FOR SYSTEM_TIME AS OF TIMESTAMP '" .. ts_of(name) .. "'"
    end))
  end
  local function branch_diff(s)
    local db, t, s2, s1 = s:match("^DATA BRANCH DIFF `([^`]+)`%.`([^`]+)`{SNAPSHOT = '([^']+)'} AGAINST `[^`]+`%.`[^`]+`{SNAPSHOT = '([^']+)'}$")
    if not db then return nil end
    if not o.branch_diff then return false end
    local cols = real:query("SELECT column_name FROM information_schema.columns WHERE table_schema = '" .. db ..
      "' AND table_name = '" .. t .. "' ORDER BY ordinal_position")
    local keys = real:query("SELECT column_name FROM information_schema.key_column_usage WHERE table_schema = '" .. db ..
      "' AND table_name = '" .. t .. "' AND constraint_name = 'PRIMARY' AND column_name NOT IN ('row_start', 'row_end') " ..
      "ORDER BY ordinal_position")
    local ref = "`" .. db .. "`.`" .. t .. "`"
    local new = "(SELECT * FROM " .. ref .. " FOR SYSTEM_TIME AS OF TIMESTAMP '" .. ts_of(s2) .. "')"
    local old = "(SELECT * FROM " .. ref .. " FOR SYSTEM_TIME AS OF TIMESTAMP '" .. ts_of(s1) .. "')"
    local on, same, list_n, list_o = {}, {}, {}, {}
    for _, k in ipairs(keys) do on[#on + 1] = "n.`" .. k[1] .. "` = o.`" .. k[1] .. "`" end
    for _, c in ipairs(cols) do
      same[#same + 1] = "n.`" .. c[1] .. "` <=> o.`" .. c[1] .. "`"
      list_n[#list_n + 1] = "n.`" .. c[1] .. "`"
      list_o[#list_o + 1] = "o.`" .. c[1] .. "`"
    end
    local k1 = keys[1][1]
    local head = "'" .. t .. "' AS `diff " .. t .. " against " .. t .. "`, "
    return "SELECT " .. head .. "'INSERT' AS flag, " .. table.concat(list_n, ", ") .. " FROM " .. new .. " n LEFT JOIN " ..
      old .. " o ON " .. table.concat(on, " AND ") .. " WHERE o.`" .. k1 .. "` IS NULL UNION ALL " ..
      "SELECT " .. head .. "'DELETE', " .. table.concat(list_o, ", ") .. " FROM " .. old .. " o LEFT JOIN " .. new ..
      " n ON " .. table.concat(on, " AND ") .. " WHERE n.`" .. k1 .. "` IS NULL UNION ALL " ..
      "SELECT " .. head .. "'UPDATE', " .. table.concat(list_n, ", ") .. " FROM " .. new .. " n JOIN " .. old .. " o ON " ..
      table.concat(on, " AND ") .. " WHERE NOT (" .. table.concat(same, " AND ") .. ")"
  end
  -- returns: "answer", rows | "sql", rewritten
  local function translate(s)
    self.log[#self.log + 1] = s
    local name = s:match("^CREATE SNAPSHOT ([%w_]+) FOR ")
    if name then
      real:query("DO SLEEP(0.002)")
      self.snapshots[name] = real:query("SELECT UTC_TIMESTAMP(6)")[1][1]
      persist()
      real:query("DO SLEEP(0.002)")
      return "answer", 0
    end
    name = s:match("^SELECT ts FROM mo_catalog%.mo_snapshots WHERE sname = '([^']+)'$")
    if name then
      return "answer", self.snapshots[name] and { { self.snapshots[name] } } or {}
    end
    if s:match("^SELECT sname FROM mo_catalog%.mo_snapshots") then
      local out = {}
      for n in pairs(self.snapshots) do out[#out + 1] = { n } end
      table.sort(out, function(a, b) return a[1] < b[1] end)
      return "answer", out
    end
    name = s:match("^DROP SNAPSHOT IF EXISTS ([%w_]+)$")
    if name then self.snapshots[name] = nil persist() return "answer", 0 end
    if s == "SHOW PITR" then return "answer", o.pitr or {} end
    local d = branch_diff(s)
    if d == false then return "error", "You have an error in your SQL syntax near 'DATA BRANCH DIFF'", 1064 end
    if d then return "sql", d end
    if s:find("CHECKSUM TABLE", 1, true) then return "error", "CHECKSUM TABLE is not supported", 1235 end
    return "sql", rewrite_refs(s)
  end
  function self:query(s)
    local kind, a, b = translate(s)
    if kind == "answer" then return a end
    if kind == "error" then return nil, a, b end
    return real:query(a)
  end
  function self:exec(s)
    local kind, a, b = translate(s)
    if kind == "answer" then return 0 end
    if kind == "error" then return nil, a, b end
    return real:exec(a)
  end
  function self:stream(s)
    local kind, a, b = translate(s)
    if kind == "error" then return nil, a, b end
    assert(kind == "sql", "emulator: cannot stream " .. s)
    return real:stream(a)
  end
  return self
end

return M
