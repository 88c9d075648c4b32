-- pipelines/mo_to_mysql.lua — seed 000 as a script: MatrixOne source_db.orders
-- -> MySQL analytics_db.orders_backup. A full copy read at a MatrixOne snapshot,
-- then every `interval` seconds a new snapshot, the rows that changed since the
-- previous one (DATA BRANCH DIFF ... AGAINST ..., chunk checksums where the
-- server lacks it), applied with the watermark in the same MySQL transaction.
-- Pause = stop the process (Ctrl-C / SIGTERM); resume = run it again: it
-- continues from the snapshot its watermark names.
--
--   mocdc run pipelines/mo_to_mysql.lua                      # the seed's endpoints
--   mocdc run pipelines/mo_to_mysql.lua --set source_uri=mysql://root:111@127.0.0.1:6001 \
--        --set sink_uri=mysql://root:111@127.0.0.1:3306 --set interval=5
-- Variables: source_uri, sink_uri, tables (default source_db.orders:analytics_db.orders_backup),
-- interval (seconds, default 10), checkpoint. Passwords: MOCDC_SOURCE_PASSWORD / MOCDC_SINK_PASSWORD.
-- The source needs a PITR covering the tables (mocdc says which statement creates one).
local orders = load.matrixone {
  uri = var("source_uri", "mysql://root:111@127.0.0.1:6001"),
  password = os.getenv("MOCDC_SOURCE_PASSWORD"),
  tables = var("tables", "source_db.orders:analytics_db.orders_backup"),
}

save.append(orders, var("sink_uri", "mysql://root:111@127.0.0.1:3306"), {
  password = os.getenv("MOCDC_SINK_PASSWORD"),
  duration = var("interval", 10),
  checkpointLocation = vars.checkpoint,
})
