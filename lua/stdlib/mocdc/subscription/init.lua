-- Subscriptions (seed 003), run by the downstream:
--
--   mocdc sql --sink-uri URI "CREATE SUBSCRIPTION name DATABASE db [TABLE t]
--                             FROM 'mysql://acc#user:pw@host:port' [SYNC_INTERVAL = n]"
--   mocdc sql --sink-uri URI "SHOW SUBSCRIPTIONS"
--   mocdc sql --sink-uri URI "DROP SUBSCRIPTION [IF EXISTS] name"
--   mocdc serve --state-uri URI        executor + scanner (several workers may share a downstream)
--
-- mocdc.subscription.sql     the statements: parser, CREATE / SHOW / DROP, `mocdc sql`
-- mocdc.subscription.store   the state in the downstream: subscriptions, job rows,
--                            claims with owner + lsn fencing, the lease
-- mocdc.subscription.worker  the executor and scanner: one iteration of a job through
--                            the snapshot-diff engine, the upstream tables' changes
-- mocdc.serve                `mocdc serve`: the worker's loop beside the task supervisor
--
-- This module is their public face for callers (the CLI, specs).
local sql = require("mocdc.subscription.sql")
local store = require("mocdc.subscription.store")
local worker = require("mocdc.subscription.worker")

return {
  DEFAULT_INTERVAL = store.DEFAULT_INTERVAL,
  USAGE = sql.USAGE,
  STATEMENTS = sql.STATEMENTS,
  SHOW_COLUMNS = sql.SHOW_COLUMNS,
  tokenize = sql.tokenize,
  parse = sql.parse,
  format_table = sql.format_table,
  sql_main = sql.main,
  worker = worker.new,
}
