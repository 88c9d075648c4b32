-- The table record: one source table of a job and everything the stages learn about it.
--
-- pipeline.tables resolves the selection into records (M.new), the source describes them, the
-- copy and the engines add what they compute. Every field is declared here with the stage that
-- writes it; with MOCDC_STRICT=1 (the test suite sets it) writing an undeclared field raises, so
-- a new field is documented here or the specs fail.
local M = {}

-- field -> "stage: meaning"
M.FIELDS = {
  -- selection (pipeline/tables.lua)
  src_db = "selection: source database",
  src_table = "selection: source table",
  dst_db = "selection: sink database",
  dst_table = "selection: sink table",
  -- description (source/mysql.lua describe; subscription describe)
  src_label = "describe: \"db.table\" of the source, used in messages and watermarks",
  columns = "describe: written columns (schema.columns entries, generated ones left out)",
  generated = "describe: generated columns (never written; the sink computes them)",
  generated_set = "describe: set of generated column names (lower-case); binlog DDL refreshes it",
  key = "describe: key column names (primary key, else idCols)",
  key_from_idcols = "describe: true when the key comes from idCols (no primary key)",
  key_idx = "describe: indexes of the key columns in columns",
  create_sql = "describe: SHOW CREATE TABLE of the source",
  estimated_rows = "describe: information_schema table_rows (progress only)",
  -- copy (engine/copy.lua prepare)
  out_columns = "copy: the sink's columns after rename/drop transforms",
  dst_key = "copy: key column names on the sink",
  dst_key_idx = "copy: indexes of the key columns in out_columns",
  -- sink (sink/mysql.lua)
  load_sql = "sink: the table's LOAD DATA statement, built once",
  -- binlog engine (engine/binlog*.lua)
  wm = "binlog: the sink's watermark row read at start",
  pos = "binlog: position this table's changes are applied from",
  applied = "binlog: rows applied so far (progress)",
  failed = "binlog: message of the failure that stopped this table",
  -- snapshot diff (engine/snapdiff.lua prepare)
  keycols = "snapdiff: source key column records",
  dst_keycols = "snapdiff: sink key column records",
  dst_label = "snapdiff: \"db.table\" of the sink",
  src_ref = "snapdiff: source table reference (may carry {SNAPSHOT=...})",
  dst_ref = "snapdiff: quoted sink table name",
  diff_sig = "snapdiff: signature of the checksummed columns and mode",
  same_shape = "snapdiff: sink rows have the source's columns and text (no transforms)",
  vcols = "snapdiff: versioning columns for the change bound",
  ucol = "snapdiff: the updated-at column of the change bound",
  ucol_fsp = "snapdiff: fractional-second precision of ucol",
  -- MatrixOne engine (engine/matrixone.lua)
  no_branch = "matrixone: the source has no DATA BRANCH DIFF for this table (chunk checksums)",
  old_ref = "matrixone: table reference at the previous snapshot",
}

-- refuse undeclared fields (MOCDC_STRICT=1; the suite sets it)
M.strict = os.getenv("MOCDC_STRICT") == "1"

local Record = {}
Record.__newindex = function(t, k, v)
  if M.strict and M.FIELDS[k] == nil then
    local info = debug.getinfo(2, "Sl")
    error(string.format("table record: field '%s' is not declared in mocdc.pipeline.table (written at %s:%d)",
      tostring(k), info.short_src, info.currentline or 0), 2)
  end
  rawset(t, k, v)
end

-- new{src_db=, src_table=, dst_db=, dst_table=, ...} -> a table record
function M.new(fields)
  local t = setmetatable({}, Record)
  for k, v in pairs(fields) do t[k] = v end
  return t
end

function M.is_record(t) return getmetatable(t) == Record end

return M
