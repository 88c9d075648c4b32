-- Pipelines: user scripts in the MLSQL load/save style.
--
--   set { streamName = "orders" }                 -- variables (--set name=value wins)
--   local src = load.snapshot { uri = var "source_uri", tables = var "tables" }
--   save.append(src:filter(fn), var "sink_uri", { checkpointLocation = "/var/lib/mocdc/x" })
--
-- The script only declares: `save.*` registers a job; the runner executes the
-- jobs after the script returns. The script runs in its own environment
-- (standard libraries + the pipeline API); assigning an undeclared global is
-- an error (a typo should not silently create a variable).
local errors = require("mocdc.errors")
local log = require("mocdc.log")
local stream = require("mocdc.pipeline.stream")
local uri = require("mocdc.uri")

local M = {}

-- The endpoints are checked while the script declares: a bad URI is a
-- configuration error (exit 2), reported before anything connects.
local function check_uri(role, s)
  local u, err = uri.parse(s)
  if not u then errors.raise((err:gsub("^invalid URI", "invalid " .. role .. " URI")), 2) end
end

local function sources(ctx)
  local load = {}
  local function source(kind)
    return function(opts)
      if type(opts) ~= "table" then
        error(string.format("load.%s expects a table of options: load.%s { ... }", kind, kind), 2)
      end
      local o = {}
      for k, v in pairs(opts) do o[k] = v end
      if o.uri == nil and o.host == nil then
        errors.raise(string.format("load.%s: give uri = \"mysql://user:password@host:port\" or " ..
          "host/port/userName/password", kind), 2)
      end
      local s = o.uri or require("mocdc.source.mysql").source_uri(o)
      if type(s) == "string" then check_uri("source", s) end
      return stream.new({ kind = kind, opts = o })
    end
  end
  load.snapshot = source("snapshot")
  load.binlog = source("binlog")
  load.matrixone = source("matrixone")
  return setmetatable(load, { __index = function(_, k)
    error(string.format("unknown source load.%s (available: snapshot, binlog, matrixone)", tostring(k)), 2)
  end })
end

local function sinks(ctx)
  local save = {}
  function save.append(s, target, opts)
    if not stream.is(s) then
      error("save.append: first argument must be a stream returned by load.* (or a transform of one)", 2)
    end
    if type(target) ~= "string" or target == "" then
      error("save.append: second argument must be the sink URI, e.g. \"mysql://user:pw@host:3306\"", 2)
    end
    local scheme = target:match("^(%a[%w+.-]*)://")
    if scheme and (scheme:lower() == "mysql" or scheme:lower() == "matrixone") then check_uri("sink", target) end
    local o = {}
    for k, v in pairs(opts or {}) do o[k] = v end
    if o.mode and tostring(o.mode):lower() ~= "append" then
      error(string.format("save.append: mode \"%s\" is not supported (use mode = \"Append\")", tostring(o.mode)), 2)
    end
    -- the sink's target pattern ({db}/{table}) decides where each source table goes:
    -- the job gets its own copy of the source options carrying it
    -- (and idCols, which MLSQL gives to save: the key of tables without one)
    if o.target ~= nil or o.idCols ~= nil then
      local so = {}
      for k, v in pairs(s.source.opts or {}) do so[k] = v end
      so.target = o.target or so.target
      so.idCols = so.idCols or o.idCols
      local copy = stream.new({ kind = s.source.kind, opts = so })
      copy.transforms = s.transforms
      s = copy
    end
    ctx.jobs[#ctx.jobs + 1] = { stream = s, target = target, opts = o }
  end
  return save
end

-- Build the environment a pipeline script runs in.
function M.env(ctx)
  local env = {}
  for _, name in ipairs({ "assert", "error", "ipairs", "next", "pairs", "pcall", "print", "select",
    "tonumber", "tostring", "type", "unpack", "xpcall", "string", "table", "math", "os", "io",
    "require", "setmetatable", "getmetatable", "rawget", "rawset", "rawequal", "coroutine", "bit", "jit" }) do
    env[name] = _G[name]
  end
  env.cjson = require("cjson")
  -- Which variables the script reads (var, set, vars.NAME; iterating vars
  -- reads them all): a --set name it never reads is refused after it ran.
  ctx.read = ctx.read or {}
  local vars = setmetatable({}, {
    __index = function(_, k) ctx.read[k] = true return ctx.vars[k] end,
    __newindex = function(_, k, v) ctx.read[k] = true ctx.vars[k] = v end,
  })
  env.vars = vars
  env.pairs = function(t)
    if t == vars then ctx.read_all = true return next, ctx.vars, nil end
    return pairs(t)
  end
  env.next = function(t, k)
    if t == vars then ctx.read_all = true return next(ctx.vars, k) end
    return next(t, k)
  end
  env.ipairs = function(t)
    if t == vars then ctx.read_all = true return ipairs(ctx.vars) end
    return ipairs(t)
  end
  env.load = sources(ctx)
  env.save = sinks(ctx)
  env.log = log
  -- set{name = value}: MLSQL's `set`; values given with --set on the command line win.
  env.set = function(t)
    if type(t) ~= "table" then error("set expects a table: set { name = value }", 2) end
    for k, v in pairs(t) do
      ctx.read[k] = true
      if ctx.cli_vars[k] == nil then ctx.vars[k] = v end
    end
  end
  -- var(name[, default]): a --set/set variable; missing without default is an error.
  env.var = function(name, default)
    ctx.read[name] = true
    local v = ctx.vars[name]
    if v == nil then v = default end
    if v == nil then
      error(string.format("variable '%s' is not set (pass --set %s=...)", name, name), 2)
    end
    return v
  end
  -- env(name[, default]): an environment variable (for secrets).
  env.env = function(name, default)
    local v = os.getenv(name)
    if v == nil or v == "" then v = default end
    if v == nil then error(string.format("environment variable %s is not set", name), 2) end
    return v
  end
  -- mask(s): a stable irreversible mask keeping the first character and the domain of an email.
  env.mask = function(s)
    if s == nil then return nil end
    s = tostring(s)
    local user, domain = s:match("^([^@]*)(@.*)$")
    if user then return user:sub(1, 1) .. string.rep("*", math.max(#user - 1, 0)) .. domain end
    return s:sub(1, 1) .. string.rep("*", math.max(#s - 1, 0))
  end
  return setmetatable(env, {
    __newindex = function(_, k, _)
      error(string.format("assignment to undeclared global '%s' (use local %s = ...)", tostring(k), tostring(k)), 2)
    end,
  })
end

-- Refuse a --set name the script never read while it declared (a typo would
-- otherwise fall back to the default silently). streamName names the pipeline.
-- The values are never shown (one may be a password).
function M.check_read(ctx)
  if ctx.read_all then return end
  local unknown = {}
  for k in pairs(ctx.cli_vars) do
    if not ctx.read[k] and k ~= "streamName" then unknown[#unknown + 1] = k end
  end
  if #unknown == 0 then return end
  table.sort(unknown)
  local known = { "streamName" }
  for k in pairs(ctx.read) do
    if k ~= "streamName" then known[#known + 1] = tostring(k) end
  end
  table.sort(known)
  errors.raise(string.format("--set %s: %s never reads a variable '%s' (it reads: %s; a transform must read " ..
    "its variables while the script declares: local x = var \"x\")", table.concat(unknown, ", "), ctx.path,
    table.concat(unknown, "' or '"), table.concat(known, ", ")), 2)
end

-- Load and execute a pipeline script; returns ctx with the declared jobs.
function M.declare(path, cli_vars)
  local chunk, err = loadfile(path)
  if not chunk then
    if err and err:find("cannot open", 1, true) then
      errors.raise(string.format("cannot read pipeline %s (%s)", path, err:match("cannot open [^:]*: (.*)") or err), 2)
    end
    errors.raise(err, 2)
  end
  local ctx = { vars = {}, cli_vars = cli_vars or {}, jobs = {}, path = path }
  for k, v in pairs(ctx.cli_vars) do ctx.vars[k] = v end
  setfenv(chunk, M.env(ctx))
  local ok, e = pcall(chunk)
  if not ok then
    if errors.is(e) then error(e, 0) end
    errors.raise(errors.message(e), 2)
  end
  M.check_read(ctx)
  if #ctx.jobs == 0 then
    errors.raise(string.format("pipeline %s declares no save.append(...): nothing to do", path), 2)
  end
  local base = path:match("([^/]+)%.lua$") or path
  ctx.name = tostring(ctx.vars.streamName or base)
  return ctx
end

return M
