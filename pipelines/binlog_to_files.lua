-- pipelines/binlog_to_files.lua — seed 004 literally: the MLSQL binlog load/save
-- pipeline, with the changes of every matching table written as JSONL change
-- records under /tmp/binlog1/{db}/{table}/changes.jsonl.
--
-- MLSQL:
--   set streamName="binlog";
--   load binlog.`` where host="127.0.0.1" and port="3306" and userName="xxx" and password="xxxx"
--     and bingLogNamePrefix="mysql-bin" and binlogIndex="4" and binlogFileOffset="4"
--     and databaseNamePattern="mlsql_console" and tableNamePattern="script_file" as table1;
--   save append table1 as binlogRate.`/tmp/binlog1/{db}/{table}`
--     options mode="Append" and idCols="id" and duration="5" and checkpointLocation="/tmp/cpl-binlog";
--
-- Variables (--set): host, port, userName, password (or MOCDC_SOURCE_PASSWORD),
-- bingLogNamePrefix, binlogIndex, binlogFileOffset, databaseNamePattern,
-- tableNamePattern, path, idCols, duration, checkpointLocation — defaults as in the seed;
-- mergeSchema ("true": DDL on a matching table is recorded, {"op":"ddl",...}, instead of stopping).
-- Without binlogIndex the pipeline first writes a consistent snapshot of the
-- tables (records with "snapshot": true), then streams from that position.
set { streamName = "binlog" }

local table1 = load.binlog {
  host = var("host", "127.0.0.1"),
  port = var("port", "3306"),
  userName = var("userName", "xxx"),
  password = os.getenv("MOCDC_SOURCE_PASSWORD") or var("password", "xxxx"),
  bingLogNamePrefix = var("bingLogNamePrefix", "mysql-bin"),
  binlogIndex = vars.binlogIndex,
  binlogFileOffset = vars.binlogFileOffset,
  databaseNamePattern = var("databaseNamePattern", "mlsql_console"),
  tableNamePattern = var("tableNamePattern", "script_file"),
}

save.append(table1, "file://" .. var("path", "/tmp/binlog1/{db}/{table}"), {
  mode = "Append",
  idCols = var("idCols", "id"),
  duration = var("duration", "5"),
  checkpointLocation = var("checkpointLocation", "/tmp/cpl-binlog"),
  mergeSchema = vars.mergeSchema, -- "true": source DDL becomes {"op":"ddl",...} records (default: DDL stops)
})
