-- pipelines/mo_to_mo.lua — seed 001 as a script: production MatrixOne
-- production_db.user_activities -> analytics MatrixOne analytics_db.analytics_activities
-- (table level), written in the MatrixOne dialect (composite-key deletes as
-- `(a = 1 and b = 2) or ...`, no key twice in one REPLACE).
--
-- PITR first, on the source, as in the seed:
--   create pitr pitr_activity for account range 2 "h";
--
--   mocdc run pipelines/mo_to_mo.lua --set source_uri=mysql://root:111@127.0.0.1:6001 \
--        --set sink_uri=mysql://root:111@10.222.1.2:6001
-- Variables: source_uri, sink_uri, tables (default
-- production_db.user_activities:analytics_db.analytics_activities), interval (default 10), checkpoint.
local activities = load.matrixone {
  uri = var("source_uri", "mysql://root:111@127.0.0.1:6001"),
  password = os.getenv("MOCDC_SOURCE_PASSWORD"),
  tables = var("tables", "production_db.user_activities:analytics_db.analytics_activities"),
}

save.append(activities, var("sink_uri", "mysql://root:111@127.0.0.1:6002"), {
  sinkType = "matrixone",
  password = os.getenv("MOCDC_SINK_PASSWORD"),
  duration = var("interval", 10),
  checkpointLocation = vars.checkpoint,
})
