-- pipelines/full_copy.lua — a consistent full copy of tables between two servers.
--
-- Variables (--set name=value), defaults from the seed's orders scenario:
--   source_uri   source server      (default mysql://root:111@127.0.0.1:6001)
--   sink_uri     sink server        (default mysql://root:111@127.0.0.1:3306)
--   tables       "db.t:db2.t2,..."  (default source_db.orders:analytics_db.orders_backup)
--   checkpoint   checkpoint directory (default $MOCDC_HOME/pipelines/full_copy)
--   chunk_size   rows per sink transaction (default 100000)
--
--   mocdc run pipelines/full_copy.lua --set source_uri=mysql://root:pw@10.0.0.1:3306 \
--        --set sink_uri=mysql://root:pw@10.0.0.2:3306 --set tables=shop.orders:analytics.orders
--
-- Passwords can stay out of the command line: MOCDC_SOURCE_PASSWORD and
-- MOCDC_SINK_PASSWORD override the URIs' passwords.
local src = load.snapshot {
  uri = var("source_uri", "mysql://root:111@127.0.0.1:6001"),
  password = os.getenv("MOCDC_SOURCE_PASSWORD"),
  tables = var("tables", "source_db.orders:analytics_db.orders_backup"),
  chunkSize = var("chunk_size", 100000),
}

save.append(src, var("sink_uri", "mysql://root:111@127.0.0.1:3306"), {
  password = os.getenv("MOCDC_SINK_PASSWORD"),
  checkpointLocation = vars.checkpoint,
})
