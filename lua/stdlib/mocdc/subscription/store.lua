-- The subscriptions' state, kept in the downstream (schema `mocdc`), in two
-- tables shaped like seed 003's: mo_sync_configs (one row per subscription)
-- and mo_sync_tasks (one job per upstream table: watermark, snapshot_ts,
-- iteration_state pending|running|complete|error|cancel, cn_uuid = owner,
-- iteration_lsn, error_message; plus lease_until, so a worker that died
-- mid-iteration is replaced once its lease ran out).
--
-- A worker claims a due job with a compare-and-set on iteration_lsn (lsn + 1,
-- owner = itself) and, before every commit of the iteration, re-reads the job
-- row FOR UPDATE inside the same downstream transaction (Store:fence): if
-- another worker took the job (owner or lsn changed, or the job was cancelled)
-- the transaction is rolled back. The last commit of an iteration also sets
-- the job complete with the new watermark.
--
-- Both ends are opened here (open_downstream, open_upstream) so `mocdc sql`
-- and `mocdc serve` say the same about them.
local cjson = require("cjson")
local conn = require("mocdc.conn")
local errors = require("mocdc.errors")
local log = require("mocdc.log")
local schema = require("mocdc.schema")
local uri = require("mocdc.uri")
local util = require("mocdc.util.lib")

local M = {}

M.DEFAULT_INTERVAL = 60
-- the error a fenced-off iteration raises ({fenced = M.Fenced, msg =})
M.Fenced = "mocdc.subscription.fenced"

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

-- a SQL literal (NULL for nil / conn.NULL)
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

M.lit, M.must, M.rows = lit, must, rows

function M.ensure_schema(c)
  for _, s in ipairs(M.DDL) do must(c, s, "creating the subscription tables") end
end

-- A malformed URI is a usage error (exit 2); a downstream that refuses or
-- does not answer is a runtime error (exit 1), as for mocdc run's sink.
function M.open_downstream(u, role)
  if not u or u == "" then errors.raise("give the downstream with --sink-uri mysql://user:pw@host:port", 2) end
  local ok, perr = uri.parse(u)
  if not ok then errors.raise((perr:gsub("^invalid URI", "invalid " .. (role or "downstream") .. " URI")), 2) end
  local c, err, code, state = conn.open(u, { role = role or "downstream", password = os.getenv("MOCDC_SINK_PASSWORD") })
  if not c then errors.open_failed(err, code, nil, state) end
  return c
end

function M.open_upstream(u)
  local c, err, code, state = conn.open(u, { role = "upstream" })
  if not c then errors.open_failed(err, code or 2003, nil, state) end
  return c
end

---------------------------------------------------------------------------
-- subscriptions (mo_sync_configs): what CREATE / SHOW / DROP read and write
---------------------------------------------------------------------------

-- The task_id of a subscription, or nil.
function M.find(c, name)
  local r = rows(c, "SELECT task_id FROM " .. M.CONFIGS .. " WHERE subscription_name = " .. lit(c, name))
  return r[1] and r[1][1] or nil
end

function M.add(c, ast)
  must(c, "INSERT INTO " .. M.CONFIGS .. " (subscription_name, sync_level, account_id, db_name, table_name, " ..
    "upstream_conn, sync_config, state) VALUES (" .. lit(c, ast.name) .. ", " .. lit(c, ast.level) .. ", 0, " ..
    lit(c, ast.database) .. ", " .. lit(c, ast.table) .. ", " .. lit(c, ast.upstream) .. ", " ..
    lit(c, cjson.encode({ sync_interval = ast.interval })) .. ", 0)", "creating the subscription")
end

-- A subscription, its jobs and their diff states, in one transaction.
function M.remove(c, id)
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
end

-- SHOW SUBSCRIPTIONS' rows: name, upstream, db, table or '*', sync_config,
-- the number of jobs in error, created, updated.
function M.list(c)
  return rows(c, "SELECT c.subscription_name, c.upstream_conn, c.db_name, COALESCE(c.table_name, '*'), " ..
    "c.sync_config, (SELECT COUNT(*) FROM " .. M.TASKS .. " j WHERE j.task_id = c.task_id AND " ..
    "j.iteration_state = 'error'), DATE_FORMAT(c.created_at, '%Y-%m-%d %H:%i:%s'), " ..
    "DATE_FORMAT(c.updated_at, '%Y-%m-%d %H:%i:%s') FROM " .. M.CONFIGS .. " c ORDER BY c.subscription_name")
end

---------------------------------------------------------------------------
-- jobs (mo_sync_tasks): claims, the fence, the lease
---------------------------------------------------------------------------
local Store = {}
Store.__index = Store

-- a subscription's SYNC_INTERVAL from its sync_config
local function interval_of(json)
  local ok, cfg = pcall(cjson.decode, json)
  return (ok and type(cfg) == "table" and tonumber(cfg.sync_interval)) or M.DEFAULT_INTERVAL
end

-- The job rows of one downstream as worker `owner` sees them: its claims hold
-- for `lease` seconds and are renewed at every fenced commit.
function M.open(state_uri, owner, lease)
  local self = setmetatable({ owner = owner, lease = lease, locked = {}, locked_note = {} }, Store)
  self.c = M.open_downstream(state_uri, "downstream")
  -- a claim never waits long for a job row another worker holds (see claim)
  if self.c.flavour ~= "matrixone" then must(self.c, "SET SESSION innodb_lock_wait_timeout = 1") end
  M.ensure_schema(self.c)
  return self
end

function Store:close() self.c:close() end

-- The active subscriptions: {task_id, name, level, db, table, upstream, interval}.
function Store:configs()
  local out = {}
  for _, r in ipairs(rows(self.c, "SELECT task_id, subscription_name, sync_level, db_name, table_name, upstream_conn, " ..
    "sync_config FROM " .. M.CONFIGS .. " WHERE state = 0 ORDER BY task_id")) do
    out[#out + 1] = { task_id = r[1], name = r[2], level = r[3], db = r[4], table = r[5] ~= conn.NULL and r[5] or nil,
      upstream = r[6], interval = interval_of(r[7]) }
  end
  return out
end

-- Seed 003 5.1: at start, pending/running jobs are complete (iterations are idempotent).
function Store:recover()
  must(self.c, "UPDATE " .. M.TASKS .. " SET iteration_state = 'complete', lease_until = NULL " ..
    "WHERE iteration_state IN ('pending', 'running')", "recovering jobs")
end

-- The snapshot diff's stored state of a job (its object list).
function Store:drop_state(task_id, job_id)
  if schema.table_exists(self.c, "mocdc", "diff_state") then
    must(self.c, "DELETE FROM `mocdc`.`diff_state` WHERE pipeline = " .. lit(self.c, "sub:" .. task_id) ..
      " AND source_table = " .. lit(self.c, "job:" .. job_id))
  end
end

-- A subscription's jobs not cancelled, by table name: {name = {{id =, table_id =}, ...}}.
function Store:jobs(task_id)
  local jobs = {}
  for _, r in ipairs(rows(self.c, "SELECT job_id, table_name, table_id FROM " .. M.TASKS .. " WHERE task_id = " ..
    task_id .. " AND iteration_state <> 'cancel'")) do
    jobs[r[2]] = jobs[r[2]] or {}
    table.insert(jobs[r[2]], { id = r[1], table_id = tostring(r[3]) })
  end
  return jobs
end

function Store:add_job(task_id, db, table_id, name)
  must(self.c, "INSERT IGNORE INTO " .. M.TASKS .. " (task_id, db_name, table_id, table_name) VALUES (" ..
    task_id .. ", " .. lit(self.c, db) .. ", " .. table_id .. ", " .. lit(self.c, name) .. ")")
end

-- Cancel a job, on `c` (a sink's connection inside its fenced transaction) or the store's own.
function Store:cancel(job_id, c)
  must(c or self.c, "UPDATE " .. M.TASKS .. " SET iteration_state = 'cancel', updated_at = UTC_TIMESTAMP(6) " ..
    "WHERE job_id = " .. job_id)
end

-- Claim the most overdue job (CAS on iteration_lsn). Returns job | nil.
function Store:claim()
  local r = rows(self.c, "SELECT j.job_id, j.task_id, j.db_name, j.table_name, j.table_id, j.iteration_lsn, " ..
    "j.iteration_state, TIMESTAMPDIFF(MICROSECOND, j.updated_at, UTC_TIMESTAMP(6)) / 1000000, " ..
    "COALESCE(TIMESTAMPDIFF(MICROSECOND, UTC_TIMESTAMP(6), j.lease_until) / 1000000, -1), c.upstream_conn, c.sync_config, " ..
    "c.subscription_name FROM " .. M.TASKS .. " j JOIN " .. M.CONFIGS .. " c ON c.task_id = j.task_id " ..
    "WHERE c.state = 0 AND j.iteration_state <> 'cancel' ORDER BY j.updated_at, j.job_id")
  for _, x in ipairs(r) do
    local interval = interval_of(x[11])
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

-- Inside the downstream transaction on `c` (the sink's): is the job still ours?
-- Raise {fenced =} if not; else renew the lease, or (final) set the job
-- complete at extra.snapshot_ts.
function Store:fence(c, job, final, extra)
  local r = rows(c, "SELECT cn_uuid, iteration_lsn, iteration_state FROM " .. M.TASKS .. " WHERE job_id = " ..
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
      "watermark = " .. lit(c, extra.snapshot_ts) .. ", snapshot_ts = " .. lit(c, extra.snapshot_ts)
  end
  must(c, "UPDATE " .. M.TASKS .. " SET " .. set .. " WHERE job_id = " .. job.id, "updating the job")
end

-- Stopping: hand a claimed job back so another worker continues at once.
function Store:release(job)
  self.c:exec("UPDATE " .. M.TASKS .. " SET iteration_state = 'complete', lease_until = NULL, updated_at = " ..
    "'1970-01-01 00:00:00' WHERE job_id = " .. job.id .. " AND cn_uuid = " .. lit(self.c, self.owner) ..
    " AND iteration_lsn = " .. job.lsn)
end

-- A claimed job's iteration failed: the job says why until its next iteration.
function Store:fail(job, msg)
  self.c:exec("UPDATE " .. M.TASKS .. " SET iteration_state = 'error', error_message = " .. lit(self.c, msg) ..
    ", lease_until = NULL, updated_at = UTC_TIMESTAMP(6) WHERE job_id = " .. job.id .. " AND cn_uuid = " ..
    lit(self.c, self.owner) .. " AND iteration_lsn = " .. job.lsn)
end

return M
