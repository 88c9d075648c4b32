-- pipelines/binlog_to_mysql.lua — seed 004 translated: MySQL/MariaDB binlog -> MySQL sink.
-- A consistent full copy taken at a binlog position, then every insert, update
-- and delete from the row binlog, exactly once (watermark in the sink transaction).
--
-- Variables (--set name=value), defaults from seed 000/004:
--   source_uri        source server with log_bin=ON, binlog_format=ROW (default mysql://root:111@127.0.0.1:6001)
--   sink_uri          sink server (default mysql://root:111@127.0.0.1:3306)
--   tables            "db.t:db2.t2,..." (default source_db.orders:analytics_db.orders_backup);
--                     or set databaseNamePattern/tableNamePattern (regexes, whole names) and target
--   target            sink name with {db}/{table} placeholders when patterns are used (default {db}.{table})
--   checkpoint        checkpointLocation (default $MOCDC_HOME/pipelines/binlog_to_mysql)
--   merge_schema      "true" to apply source DDL to the sink (default: DDL on a synced table stops)
--   server_id         replica server id (default derived from the process id)
--   idCols            key columns for source tables without a primary key ("id" or "a,b")
--   no_full           "true": no initial copy, stream from the source's current position
--   start_gtid        MariaDB GTID to start after (implies no full copy)
--
--   mocdc run pipelines/binlog_to_mysql.lua --set source_uri=mysql://repl:pw@db1:3306 \
--        --set sink_uri=mysql://root:pw@analytics:3306 --once
set { streamName = "binlog_to_mysql" }

local changes = load.binlog {
  uri = var("source_uri", "mysql://root:111@127.0.0.1:6001"),
  password = os.getenv("MOCDC_SOURCE_PASSWORD"),
  tables = vars.databaseNamePattern == nil and var("tables", "source_db.orders:analytics_db.orders_backup") or nil,
  databaseNamePattern = vars.databaseNamePattern,
  tableNamePattern = vars.tableNamePattern,
  exclude = vars.exclude,
  serverId = vars.server_id,
  noFull = vars.no_full,
  startGtid = vars.start_gtid,   -- start after this MariaDB GTID (e.g. 0-1-42), no full copy
  snapshotLock = vars.snapshot_lock, -- "true": take the snapshot position under a brief global read lock
                                     -- (always on MySQL, which has no binlog_snapshot_file)
}

save.append(changes, var("sink_uri", "mysql://root:111@127.0.0.1:3306"), {
  password = os.getenv("MOCDC_SINK_PASSWORD"),
  target = vars.databaseNamePattern and var("target", "{db}.{table}") or nil,
  mergeSchema = vars.merge_schema,
  idCols = vars.idCols,          -- key columns for tables without a primary key (MLSQL's idCols)
  checkpointLocation = vars.checkpoint,
})
