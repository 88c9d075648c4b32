-- pipelines/snapshot_sync.lua — keep tables in sync by snapshot diffing, for a
-- source whose change log cannot be read (no binlog, no privileges for it, or
-- any MySQL-protocol server): a full copy first, then every `interval` seconds
-- one iteration that checksums the tables' key-range chunks on the source,
-- fetches only the chunks that changed and applies the inserts, updates and
-- deletes found by comparing them with the sink's rows.
--
-- Variables (--set name=value):
--   source_uri   source server      (default mysql://root:111@127.0.0.1:6001)
--   sink_uri     sink server        (default mysql://root:111@127.0.0.1:3306)
--   tables       "db.t:db2.t2,..."  (default source_db.orders:analytics_db.orders_backup)
--   interval     seconds between iterations (default 10; --once runs one)
--   chunk_rows   rows per checksummed chunk (default 1000)
--   full_check   seconds between full checksum passes when CHECKSUM TABLE says
--                nothing changed (default 300; 0 = checksum every chunk each time)
--   parallel     source connections computing chunk checksums at once
--                (default 2; they share the iteration's snapshot)
--   checksum     crc (default), md5 or md5crc: the chunk checksum
--   update_column  a TIMESTAMP ... ON UPDATE CURRENT_TIMESTAMP column: tables
--                that have it are diffed by it (changed rows by an index range,
--                deletes by row counts) instead of chunk checksums
--   scan_margin  seconds subtracted from the change scan's lower bound (default 2)
--   checkpoint   checkpoint directory (default $MOCDC_HOME/pipelines/snapshot_sync)
--
--   mocdc run pipelines/snapshot_sync.lua --set source_uri=mysql://root:pw@10.0.0.1:3306 \
--        --set sink_uri=mysql://root:pw@10.0.0.2:3306 --set tables=shop.orders:analytics.orders
local src = load.snapshot {
  uri = var("source_uri", "mysql://root:111@127.0.0.1:6001"),
  password = os.getenv("MOCDC_SOURCE_PASSWORD"),
  tables = var("tables", "source_db.orders:analytics_db.orders_backup"),
  diffChunkRows = var("chunk_rows", 1000),
  fullCheckInterval = var("full_check", 300),
  checksumParallel = var("parallel", 2),
  checksum = vars.checksum,
  updateColumn = vars.update_column,
  changeScanMargin = vars.scan_margin,
}

save.append(src, var("sink_uri", "mysql://root:111@127.0.0.1:3306"), {
  password = os.getenv("MOCDC_SINK_PASSWORD"),
  duration = var("interval", 10),
  checkpointLocation = vars.checkpoint,
})
