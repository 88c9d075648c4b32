-- Subscriptions (seed 003), run by the downstream:
--
--   mocdc sql --sink-uri URI "CREATE SUBSCRIPTION name DATABASE db [TABLE t]
--                             FROM 'mysql://acc#user:pw@host:port' [SYNC_INTERVAL = n]"
--   mocdc sql --sink-uri URI "SHOW SUBSCRIPTIONS"
--   mocdc sql --sink-uri URI "DROP SUBSCRIPTION [IF EXISTS] name"
--   mocdc serve --state-uri URI        executor + scanner (several workers may share a downstream)
--
-- State lives in the downstream, schema `mocdc`, in two tables shaped like
-- seed 003's: mo_sync_configs (one row per subscription) and mo_sync_tasks
-- (one job per upstream table: watermark, snapshot_ts, iteration_state
-- pending|running|complete|error|cancel, cn_uuid = owner, iteration_lsn,
-- error_message; plus lease_until, so a worker that died mid-iteration is
-- replaced once its lease ran out).
--
-- A worker claims a due job with a compare-and-set on iteration_lsn (lsn + 1,
-- owner = itself), runs one snapshot-diff iteration (mocdc.engine.snapdiff: a
-- consistent upstream snapshot, chunk checksums against the stored object
-- list, changed chunks merged against the downstream's rows), and before every
-- commit re-reads the job row FOR UPDATE inside the same downstream
-- transaction: if another worker took the job (owner or lsn changed, or the job
-- was cancelled) the transaction is rolled back. So two workers never both
-- apply an iteration, and an iteration cut short anywhere is simply repeated
-- (iterations are idempotent: every chunk is compared with what the downstream
-- actually holds). The last commit of an iteration also sets the job complete
-- with the new watermark. At start, pending/running jobs are set complete
-- (seed 003 5.1).
--
-- The scanner (every --scan-interval s) lists the upstream tables of each
-- subscription: a new table gets a job; a table whose id changed (TRUNCATE,
-- DROP + CREATE) gets a fresh job (the old one is cancelled) whose first
-- iteration reconciles the downstream table with it (emptied by a truncate;
-- re-created when its columns changed); a table dropped upstream is dropped
-- downstream. New upstream columns are added downstream before the next
-- iteration.
local cjson = require("cjson")
local conn = require("mocdc.conn")
local diffsrc = require("mocdc.engine.snapdiff")
local errors = require("mocdc.errors")
local log = require("mocdc.log")
local schema = require("mocdc.schema")
local uri = require("mocdc.uri")
local util = require("mocdc.util.lib")

local M = {}
local qi, qname = schema.qi, schema.qname

M.DEFAULT_INTERVAL = 60

---------------------------------------------------------------------------
-- parsing
---------------------------------------------------------------------------

M.USAGE = [[
  CREATE SUBSCRIPTION name DATABASE db [TABLE t] FROM 'mysql://acc#user:pw@host:port' [SYNC_INTERVAL = seconds]
  SHOW SUBSCRIPTIONS
  DROP SUBSCRIPTION [IF EXISTS] name]]
-- what an unknown statement is told (errors are one line; --help has the syntax)
M.STATEMENTS = "CREATE SUBSCRIPTION, SHOW SUBSCRIPTIONS or DROP SUBSCRIPTION (mocdc sql --help shows their syntax)"

-- Tokens: {k = "word"|"ident"|"string"|"number"|"op"|"eof", v = text, pos = 1-based offset}
function M.tokenize(s)
  local toks, i, n = {}, 1, #s
  local function bad(msg, pos) errors.raise(string.format("syntax error at position %d: %s", pos, msg), 2) end
  while i <= n do
    local c = s:sub(i, i)
    if c:match("%s") then
      i = i + 1
    elseif c == "-" and s:sub(i, i + 1) == "--" then
      local e = s:find("\n", i, true)
      i = e and e + 1 or n + 1
    elseif c == "'" or c == '"' then
      local j, buf = i + 1, {}
      while true do
        if j > n then bad("unterminated string starting here", i) end
        local ch = s:sub(j, j)
        if ch == "\\" and j < n then
          buf[#buf + 1] = s:sub(j + 1, j + 1)
          j = j + 2
        elseif ch == c then
          if s:sub(j + 1, j + 1) == c then buf[#buf + 1] = c j = j + 2
          else break end
        else
          buf[#buf + 1] = ch
          j = j + 1
        end
      end
      toks[#toks + 1] = { k = "string", v = table.concat(buf), pos = i }
      i = j + 1
    elseif c == "`" then
      local j, buf = i + 1, {}
      while true do
        if j > n then bad("unterminated `identifier` starting here", i) end
        local ch = s:sub(j, j)
        if ch == "`" then
          if s:sub(j + 1, j + 1) == "`" then buf[#buf + 1] = "`" j = j + 2 else break end
        else buf[#buf + 1] = ch j = j + 1 end
      end
      if #buf == 0 then bad("empty `identifier`", i) end
      toks[#toks + 1] = { k = "ident", v = table.concat(buf), pos = i }
      i = j + 1
    elseif c:match("%d") then
      local num = s:match("^%d+", i)
      local after = s:sub(i + #num, i + #num)
      if after:match("[%a_$]") then
        local w = s:match("^[%w_$]+", i)
        toks[#toks + 1] = { k = "word", v = w, pos = i }
        i = i + #w
      else
        toks[#toks + 1] = { k = "number", v = num, pos = i }
        i = i + #num
      end
    elseif c:match("[%a_$]") then
      local w = s:match("^[%w_$]+", i)
      toks[#toks + 1] = { k = "word", v = w, pos = i }
      i = i + #w
    else
      toks[#toks + 1] = { k = "op", v = c, pos = i }
      i = i + 1
    end
  end
  toks[#toks + 1] = { k = "eof", v = "", pos = n + 1 }
  return toks
end

local function show_tok(t)
  if t.k == "eof" then return "end of statement" end
  if t.k == "string" then return "'" .. t.v .. "'" end
  return "'" .. t.v .. "'"
end

-- parse(sql) -> {kind = "create"|"show"|"drop", ...}; raises one clear line (code 2).
function M.parse(s)
  if type(s) ~= "string" or s:match("^%s*$") then
    errors.raise("no statement given: expected " .. M.STATEMENTS, 2)
  end
  local toks = M.tokenize(s)
  local p = 1
  local function peek() return toks[p] end
  local function fail(expected)
    local t = peek()
    errors.raise(string.format("syntax error at position %d near %s: expected %s", t.pos, show_tok(t), expected), 2)
  end
  local function kw(word)
    local t = peek()
    if t.k == "word" and t.v:upper() == word then p = p + 1 return true end
    return false
  end
  local function need(word, expected) if not kw(word) then fail(expected or word) end end
  local function name(what)
    local t = peek()
    if t.k == "ident" or (t.k == "word" and not t.v:match("^%d")) then p = p + 1 return t.v end
    fail(what)
  end
  local function finish()
    if peek().k == "op" and peek().v == ";" then p = p + 1 end
    if peek().k ~= "eof" then fail("end of statement") end
  end
  local ast
  if kw("CREATE") then
    need("SUBSCRIPTION", "SUBSCRIPTION after CREATE")
    ast = { kind = "create", name = name("a subscription name") }
    need("DATABASE", "DATABASE <db>")
    ast.database = name("a database name after DATABASE")
    if kw("TABLE") then
      ast.table = name("a table name after TABLE")
      if peek().k == "op" and peek().v == "." then
        errors.raise(string.format("syntax error at position %d: TABLE takes a table name of the DATABASE given, " ..
          "not db.table", peek().pos), 2)
      end
    end
    need("FROM", "FROM 'mysql://acc#user:pw@host:port'")
    local t = peek()
    if t.k ~= "string" then fail("the upstream connection string in quotes after FROM") end
    p = p + 1
    ast.upstream = t.v
    local u, err = uri.parse(t.v)
    if not u then errors.raise(string.format("FROM '%s': %s", log.mask(t.v), err), 2) end
    ast.interval = M.DEFAULT_INTERVAL
    if kw("SYNC_INTERVAL") then
      if peek().k == "op" and peek().v == "=" then p = p + 1 end
      local n = peek()
      if n.k ~= "number" then fail("a number of seconds after SYNC_INTERVAL =") end
      p = p + 1
      ast.interval = tonumber(n.v)
      if ast.interval < 1 then
        errors.raise(string.format("SYNC_INTERVAL = %s: the interval must be at least 1 second", n.v), 2)
      end
    end
    finish()
    ast.level = ast.table and "table" or "database"
  elseif kw("SHOW") then
    need("SUBSCRIPTIONS", "SUBSCRIPTIONS after SHOW")
    finish()
    ast = { kind = "show" }
  elseif kw("DROP") then
    need("SUBSCRIPTION", "SUBSCRIPTION after DROP")
    ast = { kind = "drop" }
    if kw("IF") then need("EXISTS", "EXISTS after IF") ast.if_exists = true end
    ast.name = name("a subscription name")
    finish()
  else
    errors.raise(string.format("syntax error at position %d near %s: expected %s", peek().pos, show_tok(peek()),
      M.STATEMENTS), 2)
  end
  return ast
end

---------------------------------------------------------------------------
-- state tables
---------------------------------------------------------------------------

M.CONFIGS = "`mocdc`.`mo_sync_configs`"
M.TASKS = "`mocdc`.`mo_sync_tasks`"

M.DDL = {
  "CREATE DATABASE IF NOT EXISTS `mocdc`",
  [[CREATE TABLE IF NOT EXISTS `mocdc`.`mo_sync_configs` (
  task_id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
  subscription_name VARCHAR(255) NOT NULL,
  sync_level VARCHAR(16) NOT NULL,
  account_id BIGINT NOT NULL DEFAULT 0,
  db_name VARCHAR(255),
  table_name VARCHAR(255),
  upstream_conn VARCHAR(5000) NOT NULL,
  sync_config JSON NOT NULL,
  state TINYINT NOT NULL DEFAULT 0,
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP ON UPDATE CURRENT_TIMESTAMP,
  UNIQUE KEY uk_subscription_name (subscription_name))]],
  [[CREATE TABLE IF NOT EXISTS `mocdc`.`mo_sync_tasks` (
  job_id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
  task_id INT UNSIGNED NOT NULL,
  account_id BIGINT NOT NULL DEFAULT 0,
  db_id BIGINT NOT NULL DEFAULT 0,
  db_name VARCHAR(255) NOT NULL,
  table_id BIGINT NOT NULL,
  table_name VARCHAR(255) NOT NULL,
  watermark DATETIME(6) NOT NULL DEFAULT '1970-01-01 00:00:00',
  snapshot_ts DATETIME(6) NULL,
  iteration_state VARCHAR(16) NOT NULL DEFAULT 'pending',
  cn_uuid VARCHAR(64) NULL,
  iteration_lsn BIGINT NOT NULL DEFAULT 0,
  lease_until DATETIME(6) NULL,
  error_message VARCHAR(5000) NULL,
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at DATETIME(6) NOT NULL DEFAULT '1970-01-01 00:00:00',
  UNIQUE KEY uk_job (task_id, db_name, table_name, table_id),
  KEY k_state (iteration_state))]],
}

local function lit(c, s)
  if s == nil or s == conn.NULL then return "NULL" end
  return "'" .. c:escape(tostring(s)) .. "'"
end

local function must(c, s, what)
  local r, err, code = c:exec(s)
  if not r then errors.raise_sql(string.format("downstream %s: %s failed: %s", c.label, what or s, tostring(err)), code) end
  return r
end

local function rows(c, s, what)
  local r, err, code = c:query(s)
  if not r then errors.raise_sql(string.format("downstream %s: %s failed: %s", c.label, what or s, tostring(err)), code) end
  return r
end

function M.ensure_schema(c)
  for _, s in ipairs(M.DDL) do must(c, s, "creating the subscription tables") end
end

-- A malformed URI is a usage error (exit 2); a downstream that refuses or
-- does not answer is a runtime error (exit 1), as for mocdc run's sink.
local function open_downstream(u, role)
  if not u or u == "" then errors.raise("give the downstream with --sink-uri mysql://user:pw@host:port", 2) end
  local ok, perr = uri.parse(u)
  if not ok then errors.raise((perr:gsub("^invalid URI", "invalid " .. (role or "downstream") .. " URI")), 2) end
  local c, err, code, state = conn.open(u, { role = role or "downstream", password = os.getenv("MOCDC_SINK_PASSWORD") })
  if not c then errors.open_failed(err, code, nil, state) end
  return c
end

local function open_upstream(u)
  local c, err, code, state = conn.open(u, { role = "upstream" })
  if not c then errors.open_failed(err, code or 2003, nil, state) end
  return c
end

---------------------------------------------------------------------------
-- CREATE / SHOW / DROP
---------------------------------------------------------------------------

function M.create(c, ast)
  local up = open_upstream(ast.upstream)
  local ok, e = pcall(function()
    if not schema.database_exists(up, ast.database) then
      errors.raise(string.format("upstream %s has no database '%s'", up.label, ast.database), 2)
    end
    if ast.table and not schema.table_exists(up, ast.database, ast.table) then
      errors.raise(string.format("upstream %s has no table %s.%s", up.label, ast.database, ast.table), 2)
    end
  end)
  up:close()
  if not ok then error(e, 0) end
  M.ensure_schema(c)
  local r = rows(c, "SELECT 1 FROM " .. M.CONFIGS .. " WHERE subscription_name = " .. lit(c, ast.name))
  if r[1] then
    errors.raise(string.format("subscription '%s' already exists (DROP SUBSCRIPTION %s first)", ast.name, ast.name), 2)
  end
  must(c, "INSERT INTO " .. M.CONFIGS .. " (subscription_name, sync_level, account_id, db_name, table_name, " ..
    "upstream_conn, sync_config, state) VALUES (" .. lit(c, ast.name) .. ", " .. lit(c, ast.level) .. ", 0, " ..
    lit(c, ast.database) .. ", " .. lit(c, ast.table) .. ", " .. lit(c, ast.upstream) .. ", " ..
    lit(c, cjson.encode({ sync_interval = ast.interval })) .. ", 0)", "creating the subscription")
  return string.format("subscription '%s' created: %s %s%s from %s every %d s (run mocdc serve --state-uri on " ..
    "this downstream to sync)", ast.name, ast.level, ast.database, ast.table and ("." .. ast.table) or "",
    log.mask(ast.upstream), ast.interval)
end

function M.drop(c, ast)
  M.ensure_schema(c)
  local r = rows(c, "SELECT task_id FROM " .. M.CONFIGS .. " WHERE subscription_name = " .. lit(c, ast.name))
  if not r[1] then
    if ast.if_exists then return string.format("subscription '%s' does not exist", ast.name) end
    errors.raise(string.format("subscription '%s' does not exist (SHOW SUBSCRIPTIONS lists them)", ast.name), 2)
  end
  local id = r[1][1]
  must(c, "START TRANSACTION")
  local ok, e = pcall(function()
    must(c, "DELETE FROM " .. M.TASKS .. " WHERE task_id = " .. id)
    must(c, "DELETE FROM " .. M.CONFIGS .. " WHERE task_id = " .. id)
    if schema.table_exists(c, "mocdc", "diff_state") then
      must(c, "DELETE FROM `mocdc`.`diff_state` WHERE pipeline = " .. lit(c, "sub:" .. id))
    end
    must(c, "COMMIT")
  end)
  if not ok then c:exec("ROLLBACK") error(e, 0) end
  return string.format("subscription '%s' dropped (the downstream tables are kept)", ast.name)
end

M.SHOW_COLUMNS = { "subscription_name", "upstream_conn", "database", "tables", "sync_interval", "status",
  "create_time", "update_time" }

-- status: 0 = normal, 2 = error (a table's last iteration failed)
function M.show(c)
  M.ensure_schema(c)
  local r = rows(c, "SELECT c.subscription_name, c.upstream_conn, c.db_name, COALESCE(c.table_name, '*'), " ..
    "c.sync_config, (SELECT COUNT(*) FROM " .. M.TASKS .. " j WHERE j.task_id = c.task_id AND " ..
    "j.iteration_state = 'error'), DATE_FORMAT(c.created_at, '%Y-%m-%d %H:%i:%s'), " ..
    "DATE_FORMAT(c.updated_at, '%Y-%m-%d %H:%i:%s') FROM " .. M.CONFIGS .. " c ORDER BY c.subscription_name")
  local out = {}
  for _, x in ipairs(r) do
    local cfg = type(x[5]) == "string" and select(2, pcall(cjson.decode, x[5])) or {}
    local interval = type(cfg) == "table" and cfg.sync_interval or M.DEFAULT_INTERVAL
    out[#out + 1] = { x[1], uri.mask(x[2]), x[3], x[4], tostring(interval), tonumber(x[6]) > 0 and "2" or "0",
      x[7], x[8] }
  end
  return out
end

-- A result table as the mysql client prints it.
function M.format_table(cols, data)
  local w = {}
  for i, c in ipairs(cols) do w[i] = #c end
  for _, r in ipairs(data) do
    for i = 1, #cols do w[i] = math.max(w[i], #tostring(r[i] == nil and "NULL" or r[i])) end
  end
  local function line()
    local p = {}
    for i = 1, #cols do p[i] = string.rep("-", w[i] + 2) end
    return "+" .. table.concat(p, "+") .. "+"
  end
  local function row(r)
    local p = {}
    for i = 1, #cols do
      local v = tostring(r[i] == nil and "NULL" or r[i])
      p[i] = " " .. v .. string.rep(" ", w[i] - #v) .. " "
    end
    return "|" .. table.concat(p, "|") .. "|"
  end
  local out = { line(), row(cols), line() }
  for _, r in ipairs(data) do out[#out + 1] = row(r) end
  out[#out + 1] = line()
  out[#out + 1] = string.format("%d row%s in set", #data, #data == 1 and "" or "s")
  return table.concat(out, "\n")
end

-- mocdc sql --sink-uri URI [--batch] "STATEMENT"
function M.sql_main(args)
  local sink_uri, stmt, batch_mode
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--sink-uri" then sink_uri = args[i + 1] i = i + 1
    elseif a:match("^%-%-sink%-uri=") then sink_uri = a:sub(12)
    elseif a == "--batch" or a == "-B" then batch_mode = true
    elseif a == "-h" or a == "--help" then
      io.write("Usage: mocdc sql --sink-uri mysql://user:pw@host:port \"STATEMENT\"\nStatements:\n" .. M.USAGE .. "\n")
      return 0
    elseif a:sub(1, 2) == "--" then errors.raise("unknown option " .. a .. " (mocdc sql --help)", 2)
    elseif stmt then errors.raise("give one statement (in quotes)", 2)
    else stmt = a end
    i = i + 1
  end
  if not sink_uri then errors.raise("mocdc sql needs --sink-uri URI: the downstream server (mysql://user@host:port)", 2) end
  local ast = M.parse(stmt)
  local c = open_downstream(sink_uri)
  local ok, res = pcall(function()
    if ast.kind == "create" then
      io.stderr:write(M.create(c, ast), "\n")
    elseif ast.kind == "drop" then
      io.stderr:write(M.drop(c, ast), "\n")
    else
      local data = M.show(c)
      if batch_mode then
        print(table.concat(M.SHOW_COLUMNS, "\t"))
        for _, r in ipairs(data) do print(table.concat(r, "\t")) end
      else
        print(M.format_table(M.SHOW_COLUMNS, data))
      end
    end
  end)
  c:close()
  if not ok then error(res, 0) end
  return 0
end

---------------------------------------------------------------------------
-- upstream metadata
---------------------------------------------------------------------------

-- Base tables of an upstream database (or one table) with their ids:
-- {name = {id =, name =}}. A truncate or a drop + create changes the id.
function M.upstream_tables(up, db, only)
  local out = {}
  local filter = only and (" AND t.table_name = " .. lit(up, only)) or ""
  if up.flavour == "matrixone" then
    for _, r in ipairs(rows(up, "SELECT relname, rel_id FROM mo_catalog.mo_tables WHERE reldatabase = " .. lit(up, db) ..
      (only and (" AND relname = " .. lit(up, only)) or "") .. " AND relkind = 'r'", "listing upstream tables")) do
      out[r[1]] = { name = r[1], id = tostring(r[2]) }
    end
    return out
  end
  local r = up:query("SELECT t.table_name, s.table_id, UNIX_TIMESTAMP(t.create_time) FROM information_schema.tables t " ..
    "LEFT JOIN information_schema.INNODB_SYS_TABLES s ON s.name = CONCAT(t.table_schema, '/', t.table_name) " ..
    "WHERE t.table_schema = " .. lit(up, db) .. " AND t.table_type IN ('BASE TABLE', 'SYSTEM VERSIONED')" .. filter)
  if not r then -- no PROCESS privilege for INNODB_SYS_TABLES: the creation time tells a recreate
    r = rows(up, "SELECT t.table_name, NULL, UNIX_TIMESTAMP(t.create_time) FROM information_schema.tables t " ..
      "WHERE t.table_schema = " .. lit(up, db) .. " AND t.table_type IN ('BASE TABLE', 'SYSTEM VERSIONED')" .. filter, "listing upstream tables")
  end
  for _, x in ipairs(r) do
    local id = x[2] ~= conn.NULL and x[2] or x[3]
    out[x[1]] = { name = x[1], id = tostring(id == conn.NULL and 0 or math.floor(tonumber(id) or 0)) }
  end
  return out
end

-- Table description for the diff engine (as mocdc.source.mysql's tables()).
function M.describe(up, db, tbl)
  local t = { src_db = db, src_table = tbl, dst_db = db, dst_table = tbl, src_label = db .. "." .. tbl }
  local cols = {}
  for _, c in ipairs(schema.columns(up, db, tbl)) do if not c.generated then cols[#cols + 1] = c end end
  if #cols == 0 then return nil end
  t.columns = cols
  t.key = schema.primary_key(up, db, tbl)
  t.key_idx = {}
  for _, k in ipairs(t.key) do
    for i, c in ipairs(cols) do if c.name:lower() == k:lower() then t.key_idx[#t.key_idx + 1] = i end end
  end
  t.create_sql = schema.show_create(up, db, tbl)
  return t
end

---------------------------------------------------------------------------
-- the executor and the scanner
---------------------------------------------------------------------------
local Worker = {}
Worker.__index = Worker

M.Fenced = "mocdc.subscription.fenced"

function M.worker(f)
  local state_uri = f["state-uri"]
  local self = setmetatable({
    f = f, state_uri = state_uri,
    owner = f["owner-id"] or string.format("mocdc-%d-%s", util.getpid(), util.uuid7():sub(-12)),
    lease = tonumber(f.lease) or 30,
    scan_every = tonumber(f["scan-interval"]) or 5,
    opts = { diffChunkRows = f["chunk-rows"], batchSize = f["batch-size"], leafRows = f["leaf-rows"],
      fullCheckInterval = f["full-check-interval"] },
    ups = {}, stats = { iterations = 0, fenced = 0, errors = 0 }, locked = {}, locked_note = {},
  }, Worker)
  self.c = open_downstream(state_uri, "downstream")
  -- a claim never waits long for a job row another worker holds (see claim)
  if self.c.flavour ~= "matrixone" then must(self.c, "SET SESSION innodb_lock_wait_timeout = 1") end
  M.ensure_schema(self.c)
  return self
end

function Worker:upstream(task_id, u)
  local e = self.ups[task_id]
  if e and e.uri == u and e.c:ping() then return e.c end
  if e then e.c:close() end
  local c = open_upstream(u)
  self.ups[task_id] = { uri = u, c = c }
  return c
end

function Worker:drop_upstream(task_id)
  local e = self.ups[task_id]
  if e then e.c:close() self.ups[task_id] = nil end
end

function Worker:configs()
  local out = {}
  for _, r in ipairs(rows(self.c, "SELECT task_id, subscription_name, sync_level, db_name, table_name, upstream_conn, " ..
    "sync_config FROM " .. M.CONFIGS .. " WHERE state = 0 ORDER BY task_id")) do
    local ok, cfg = pcall(cjson.decode, r[7])
    out[#out + 1] = { task_id = r[1], name = r[2], level = r[3], db = r[4], table = r[5] ~= conn.NULL and r[5] or nil,
      upstream = r[6], interval = (ok and type(cfg) == "table" and tonumber(cfg.sync_interval)) or M.DEFAULT_INTERVAL }
  end
  return out
end

-- Seed 003 5.1: at start, pending/running jobs are complete (iterations are idempotent).
function Worker:recover()
  must(self.c, "UPDATE " .. M.TASKS .. " SET iteration_state = 'complete', lease_until = NULL " ..
    "WHERE iteration_state IN ('pending', 'running')", "recovering jobs")
end

function Worker:drop_state(task_id, job_id)
  if schema.table_exists(self.c, "mocdc", "diff_state") then
    must(self.c, "DELETE FROM `mocdc`.`diff_state` WHERE pipeline = " .. lit(self.c, "sub:" .. task_id) ..
      " AND source_table = " .. lit(self.c, "job:" .. job_id))
  end
end

-- Find new / recreated / dropped upstream tables.
function Worker:scan()
  for _, cfg in ipairs(self:configs()) do
    local ok, e = pcall(function()
      local up = self:upstream(cfg.task_id, cfg.upstream)
      local now = M.upstream_tables(up, cfg.db, cfg.table)
      local jobs = {}
      for _, r in ipairs(rows(self.c, "SELECT job_id, table_name, table_id FROM " .. M.TASKS .. " WHERE task_id = " ..
        cfg.task_id .. " AND iteration_state <> 'cancel'")) do
        jobs[r[2]] = jobs[r[2]] or {}
        table.insert(jobs[r[2]], { id = r[1], table_id = tostring(r[3]) })
      end
      for name, t in pairs(now) do
        local have = false
        for _, j in ipairs(jobs[name] or {}) do
          if j.table_id == t.id then have = true
          else
            must(self.c, "UPDATE " .. M.TASKS .. " SET iteration_state = 'cancel', updated_at = UTC_TIMESTAMP(6) " ..
              "WHERE job_id = " .. j.id)
            self:drop_state(cfg.task_id, j.id)
            log.info("subscription %s: %s.%s was truncated or re-created upstream (id %s -> %s): new job",
              cfg.name, cfg.db, name, j.table_id, t.id)
          end
        end
        if not have then
          must(self.c, "INSERT IGNORE INTO " .. M.TASKS .. " (task_id, db_name, table_id, table_name) VALUES (" ..
            cfg.task_id .. ", " .. lit(self.c, cfg.db) .. ", " .. t.id .. ", " .. lit(self.c, name) .. ")")
          log.info("subscription %s: syncing %s.%s", cfg.name, cfg.db, name)
        end
      end
      for name, list in pairs(jobs) do
        if not now[name] then
          for _, j in ipairs(list) do
            must(self.c, "UPDATE " .. M.TASKS .. " SET iteration_state = 'cancel', updated_at = UTC_TIMESTAMP(6) " ..
              "WHERE job_id = " .. j.id)
            self:drop_state(cfg.task_id, j.id)
          end
          must(self.c, "DROP TABLE IF EXISTS " .. qname(cfg.db, name))
          log.info("subscription %s: %s.%s was dropped upstream: dropped downstream", cfg.name, cfg.db, name)
        end
      end
    end)
    if not ok then
      self:drop_upstream(cfg.task_id)
      log.warn("subscription %s: scanning %s failed: %s", cfg.name, log.mask(cfg.upstream), errors.message(e))
    end
  end
end

-- Claim the most overdue job (CAS on iteration_lsn). Returns job | nil.
function Worker:claim()
  local r = rows(self.c, "SELECT j.job_id, j.task_id, j.db_name, j.table_name, j.table_id, j.iteration_lsn, " ..
    "j.iteration_state, TIMESTAMPDIFF(MICROSECOND, j.updated_at, UTC_TIMESTAMP(6)) / 1000000, " ..
    "COALESCE(TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), j.lease_until) / 1000000, -1), c.upstream_conn, c.sync_config, " ..
    "c.subscription_name FROM " .. M.TASKS .. " j JOIN " .. M.CONFIGS .. " c ON c.task_id = j.task_id " ..
    "WHERE c.state = 0 AND j.iteration_state <> 'cancel' ORDER BY j.updated_at, j.job_id")
  for _, x in ipairs(r) do
    local ok, cfg = pcall(cjson.decode, x[11])
    local interval = (ok and type(cfg) == "table" and tonumber(cfg.sync_interval)) or M.DEFAULT_INTERVAL
    local age, lease_left = tonumber(x[8]), tonumber(x[9])
    local due
    if x[7] == "running" then due = lease_left < 0
    elseif x[7] == "pending" then due = true
    else due = age >= interval end
    if due and (self.locked[x[1]] or 0) > util.mono() then due = false end
    if due then
      local sql = "UPDATE " .. M.TASKS .. " SET iteration_state = 'running', cn_uuid = " ..
        lit(self.c, self.owner) .. ", iteration_lsn = iteration_lsn + 1, lease_until = UTC_TIMESTAMP(6) + INTERVAL " ..
        self.lease .. " SECOND, updated_at = UTC_TIMESTAMP(6) WHERE job_id = " .. x[1] .. " AND iteration_lsn = " ..
        x[6] .. " AND iteration_state <> 'cancel'"
      local n, err, code = self.c:exec(sql)
      if not n and (code == 1205 or code == 1213) then
        -- the job row is locked by a transaction inside its fence (a worker
        -- committing, maybe stalled there): it is that worker's job until it
        -- commits or its connection goes; the others' jobs go on meanwhile
        self.locked[x[1]] = util.mono() + self.lease
        if self.locked_note[x[1]] ~= x[6] then
          self.locked_note[x[1]] = x[6]
          log.warn("subscription %s: %s.%s is locked by another worker's commit in progress; skipped for now", x[12],
            x[3], x[4])
        end
        n = 0
      elseif not n then
        errors.raise_sql(string.format("downstream %s: claiming a job failed: %s", self.c.label, tostring(err)), code)
      end
      if n == 1 then
        return { id = x[1], task_id = x[2], db = x[3], table = x[4], table_id = x[5], lsn = tonumber(x[6]) + 1,
          upstream = x[10], interval = interval, name = x[12], took_over = x[7] == "running" }
      end
    end
  end
  return nil
end

-- Inside the downstream transaction: is the job still ours? Raise if not.
function Worker:fence(sink, job, final, extra)
  local r = rows(sink.c, "SELECT cn_uuid, iteration_lsn, iteration_state FROM " .. M.TASKS .. " WHERE job_id = " ..
    job.id .. " FOR UPDATE", "checking job ownership")
  local x = r[1]
  if not x or x[1] ~= self.owner or tonumber(x[2]) ~= job.lsn or x[3] ~= "running" then
    error({ fenced = M.Fenced, msg = string.format("job %s (%s.%s) was taken over (owner %s, lsn %s, state %s); " ..
      "this iteration is abandoned", job.id, job.db, job.table, x and tostring(x[1]) or "-", x and tostring(x[2]) or "-",
      x and tostring(x[3]) or "gone") }, 0)
  end
  local set = "lease_until = UTC_TIMESTAMP(6) + INTERVAL " .. self.lease .. " SECOND"
  if final then
    set = "iteration_state = 'complete', lease_until = NULL, error_message = NULL, updated_at = UTC_TIMESTAMP(6), " ..
      "watermark = " .. lit(sink.c, extra.snapshot_ts) .. ", snapshot_ts = " .. lit(sink.c, extra.snapshot_ts)
  end
  must(sink.c, "UPDATE " .. M.TASKS .. " SET " .. set .. " WHERE job_id = " .. job.id, "updating the job")
end

-- Make the downstream table match the upstream columns (add new columns;
-- re-create it when columns changed or went away). Returns true when the
-- downstream table was (re)created or altered.
function Worker:align_schema(sink, t)
  local c = sink.c
  if not schema.table_exists(c, t.dst_db, t.dst_table) then return false end
  local have = schema.columns(c, t.dst_db, t.dst_table)
  local by = {}
  for _, d in ipairs(have) do by[d.name:lower()] = d end
  local missing, incompatible = {}, #have > #t.columns
  for _, s in ipairs(t.columns) do
    local d = by[s.name:lower()]
    if not d then missing[#missing + 1] = s
    elseif schema.normalize_type(d.column_type) ~= schema.normalize_type(s.column_type) then incompatible = true end
  end
  local src_names = {}
  for _, s in ipairs(t.columns) do src_names[s.name:lower()] = true end
  for _, d in ipairs(have) do if not src_names[d.name:lower()] then incompatible = true end end
  if incompatible then
    must(c, "DROP TABLE " .. qname(t.dst_db, t.dst_table), "re-creating " .. t.src_label)
    log.info("%s changed its columns upstream: re-created downstream", t.src_label)
    return true
  end
  if #missing > 0 then
    for _, s in ipairs(missing) do
      must(c, "ALTER TABLE " .. qname(t.dst_db, t.dst_table) .. " ADD COLUMN " .. qi(s.name) .. " " .. s.column_type ..
        " NULL", "adding column " .. s.name .. " to " .. t.src_label)
      log.info("%s: added column %s %s downstream", t.src_label, s.name, s.column_type)
    end
    return true
  end
  return false
end

-- One iteration of one claimed job.
function Worker:run_job(job, sink)
  local up = self:upstream(job.task_id, job.upstream)
  local info
  local mosrc, mosnap
  local ok, e = pcall(function()
    local vlo
    if up.flavour == "matrixone" then
      -- MatrixOne: the iteration reads one snapshot of the table ({SNAPSHOT = ...})
      local mo = require("mocdc.engine.matrixone")
      mosrc = mo.wrap(up, { uri = job.upstream })
      mosnap = mo.sql.snapshot_prefix("sub_" .. job.task_id .. "_" .. job.id) .. job.lsn
      local ts = mosrc:create_snapshot(mosnap, { level = "table", db = job.db, table = job.table })
      mosrc.snap = mosnap
      local sec = math.floor((tonumber(ts) or 0) / 1e9)
      info = { snapshot_ts = os.date("!%Y-%m-%d %H:%M:%S", sec) .. string.format(".%06d",
        math.floor(((tonumber(ts) or 0) % 1e9) / 1e3)) }
    else
      vlo = diffsrc.version_lo(up, self.opts.changeScanMargin)
      must(up, "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
      must(up, "START TRANSACTION WITH CONSISTENT SNAPSHOT")
      info = { snapshot_ts = rows(up, "SELECT UTC_TIMESTAMP(6)")[1][1] }
    end
    local ids = M.upstream_tables(up, job.db, job.table)
    if not ids[job.table] or ids[job.table].id ~= tostring(job.table_id) then
      -- re-created: the scanner gives it a new job; dropped: drop it downstream too
      up:exec("COMMIT")
      sink:begin()
      self:fence(sink, job, false)
      must(sink.c, "UPDATE " .. M.TASKS .. " SET iteration_state = 'cancel', updated_at = UTC_TIMESTAMP(6) " ..
        "WHERE job_id = " .. job.id)
      sink:commit()
      self:drop_state(job.task_id, job.id)
      if not ids[job.table] then
        must(self.c, "DROP TABLE IF EXISTS " .. qname(job.db, job.table))
        log.info("subscription %s: %s.%s was dropped upstream: dropped downstream", job.name, job.db, job.table)
      end
      return "cancelled"
    end
    local t = M.describe(up, job.db, job.table)
    if self:align_schema(sink, t) then self:drop_state(job.task_id, job.id) end
    require("mocdc.engine.copy").prepare(t, sink, {})
    local eng = diffsrc.new({ src = mosrc or { c = up }, sink = sink, opts = self.opts, hooks = {
      state_id = function() return "job:" .. job.id end,
      no_watermark = true,
      should_stop = function() return util.stop_requested() end,
      before_commit = function(_, _, final) self:fence(sink, job, final, info) end,
    } })
    eng:prepare(t)
    eng.version_lo = vlo
    local st = eng:iterate(t, info)
    if st.gated then
      sink:begin()
      self:fence(sink, job, true, info)
      sink:commit()
    end
    up:exec("COMMIT")
    return st
  end)
  if mosnap and up:is_open() then mosrc:drop_snapshot(mosnap) end
  if not ok then
    pcall(sink.rollback, sink)
    if up:is_open() then up:exec("ROLLBACK") end
    if type(e) == "table" and e.fenced == M.Fenced then
      self.stats.fenced = self.stats.fenced + 1
      log.warn("subscription %s: %s", job.name, e.msg)
      return nil
    end
    if errors.is(e) and e.code == 130 then
      -- stopping: hand the job back so another worker continues at once
      self.c:exec("UPDATE " .. M.TASKS .. " SET iteration_state = 'complete', lease_until = NULL, updated_at = " ..
        "'1970-01-01 00:00:00' WHERE job_id = " .. job.id .. " AND cn_uuid = " .. lit(self.c, self.owner) ..
        " AND iteration_lsn = " .. job.lsn)
      error(e, 0)
    end
    self.stats.errors = self.stats.errors + 1
    local msg = log.mask(errors.message(e)):sub(1, 4000)
    log.error("subscription %s: %s.%s: %s", job.name, job.db, job.table, msg)
    self.c:exec("UPDATE " .. M.TASKS .. " SET iteration_state = 'error', error_message = " .. lit(self.c, msg) ..
      ", lease_until = NULL, updated_at = UTC_TIMESTAMP(6) WHERE job_id = " .. job.id .. " AND cn_uuid = " ..
      lit(self.c, self.owner) .. " AND iteration_lsn = " .. job.lsn)
    if not up:ping() then self:drop_upstream(job.task_id) end
    return nil
  end
  self.stats.iterations = self.stats.iterations + 1
  if type(e) == "table" then
    local n = e.inserts + e.updates + e.deletes
    local say = n > 0 and log.info or log.debug
    say("subscription %s: %s.%s at %s: %s in %.2f s", job.name, job.db, job.table, info.snapshot_ts,
      diffsrc.describe(e), e.seconds)
  end
  return e
end

-- mocdc serve --state-uri URI: the subscriptions' executor and scanner, and
-- the supervisor of `mocdc task` tasks (mocdc.task.serve) in the same
-- process: the supervisor runs as a coroutine resumed between jobs (its
-- sleeps yield), so one service runs both. Without --state-uri only tasks.
-- Flags: --lease S (30), --scan-interval S (5), --owner-id ID, --chunk-rows N,
-- --batch-size N, --leaf-rows N, --full-check-interval S, --tasks-only=true.
function M.serve(f)
  local task = require("mocdc.task")
  if f["tasks-only"] or not f["state-uri"] then return task.serve(f) end
  local w = M.worker(f)
  local sink = require("mocdc.sink.mysql").open(f["state-uri"], { pipeline = "sub", password =
    os.getenv("MOCDC_SINK_PASSWORD") })
  log.info("mocdc serve: subscriptions of %s, worker %s", w.c.label, w.owner)
  w:recover()
  -- the task supervisor, cooperatively
  local real_sleep = util.sleep
  local tasks_co, wake = nil, 0
  tasks_co = coroutine.create(function() return task.serve(f) end)
  util.sleep = function(sec)
    if tasks_co and coroutine.running() == tasks_co then
      wake = util.mono() + (tonumber(sec) or 0)
      coroutine.yield()
      return not util.stop_requested()
    end
    return real_sleep(sec)
  end
  local function step_tasks()
    if not tasks_co then return end
    if coroutine.status(tasks_co) == "dead" then tasks_co = nil return end
    if util.mono() < wake then return end
    local ok, err = coroutine.resume(tasks_co)
    if not ok then
      log.error("mocdc serve: the task supervisor stopped: %s", errors.message(err))
      tasks_co = nil
    end
  end
  local next_scan = 0
  local ok, e = pcall(function()
    while not util.stop_requested() do
      step_tasks()
      if util.mono() >= next_scan then
        w:scan()
        next_scan = util.mono() + w.scan_every
      end
      local job = w:claim()
      if job then
        sink.pipeline = "sub:" .. job.task_id
        if job.took_over then log.info("subscription %s: taking over %s.%s (lease expired)", job.name, job.db, job.table) end
        w:run_job(job, sink)
      else
        real_sleep(0.2)
      end
    end
  end)
  -- let the task supervisor stop its workers at a safe point
  local deadline = util.mono() + 60
  while tasks_co and coroutine.status(tasks_co) ~= "dead" and util.mono() < deadline do
    step_tasks()
    real_sleep(0.05)
  end
  util.sleep = real_sleep
  sink:close()
  for id in pairs(w.ups) do w:drop_upstream(id) end
  w.c:close()
  if not ok then
    if errors.is(e) and e.code == 130 then return 0 end
    error(e, 0)
  end
  return 0
end

return M
