-- The mysql sink (MySQL, MariaDB; `dialect = "matrixone"` for MatrixOne).
-- Creates the sink database/table from the source DDL when missing, refuses
-- a table with different columns, and writes in transactions that also carry
-- the pipeline's watermark row (mocdc.watermark), so a checkpoint never moves
-- past data the sink has not durably applied.
local cjson = require("cjson")
local conn = require("mocdc.conn")
local errors = require("mocdc.errors")
local log = require("mocdc.log")
local schema = require("mocdc.schema")
local sqlbuild = require("mocdc.sqlbuild")

local M = {}
local Sink = {}
Sink.__index = Sink

local DEFAULT_MAX_SQL = 4 * 1024 * 1024

-- open(uri, opts): opts.pipeline (id), opts.dialect, opts.maxSqlLength,
-- opts.watermarkDatabase (default "mocdc"), opts.password (overrides the URI's).
function M.open(uri, opts)
  opts = opts or {}
  local c, err = conn.open(uri, { role = "sink", local_infile = true, password = opts.password,
    read_timeout = opts.sendSqlTimeout, write_timeout = opts.sendSqlTimeout })
  if not c then errors.raise(err) end
  local self = setmetatable({ c = c, uri = uri, pipeline = opts.pipeline or "default",
    dialect = opts.dialect or (c.flavour == "matrixone" and "matrixone" or "mysql"),
    wm_db = opts.watermarkDatabase or "mocdc", in_txn = false, prepared = {} }, Sink)
  local map = tonumber(c:variable("max_allowed_packet")) or DEFAULT_MAX_SQL
  local limit = math.min(DEFAULT_MAX_SQL, map)
  if opts.maxSqlLength then
    local n = tonumber(opts.maxSqlLength)
    if not n or n < 1024 then
      errors.raise(string.format("maxSqlLength '%s' is not a byte count >= 1024", tostring(opts.maxSqlLength)))
    end
    if n > map then
      errors.raise(string.format("maxSqlLength %d is larger than the sink's max_allowed_packet %d; lower it or raise max_allowed_packet",
        n, map))
    end
    limit = n
  end
  self.max_sql = limit
  self.use_load_data = self.dialect == "mysql" and opts.loadData ~= false and
    tostring(c:variable("local_infile") or "ON"):upper() ~= "OFF"
  return self
end

function Sink:label() return self.c.label end

function Sink:exec(sql, what)
  local n, err, code, state = self.c:exec(sql)
  if not n then
    errors.raise(string.format("sink %s: %s failed: %s%s", self.c.label, what or "statement", err,
      code and (" (error " .. code .. ")") or ""), code)
  end
  return n
end

function Sink:query(sql, what)
  local rows, err, code = self.c:query(sql)
  if not rows then
    errors.raise(string.format("sink %s: %s failed: %s", self.c.label, what or "query", err), code)
  end
  return rows
end

function Sink:ensure_watermark()
  if self.wm_ready then return end
  self:exec("CREATE DATABASE IF NOT EXISTS " .. schema.qi(self.wm_db), "creating the watermark database")
  self:exec("CREATE TABLE IF NOT EXISTS " .. schema.qname(self.wm_db, "watermark") .. [[ (
  pipeline VARCHAR(128) NOT NULL,
  source_table VARCHAR(400) NOT NULL,
  sink_table VARCHAR(400) NOT NULL,
  phase VARCHAR(16) NOT NULL,
  full_key TEXT NULL,
  position TEXT NULL,
  updated_at DATETIME(6) NOT NULL,
  PRIMARY KEY (pipeline, source_table))]], "creating the watermark table")
  self.wm_ready = true
end

-- The watermark row of one source table, or nil.
function Sink:read_watermark(source_table)
  self:ensure_watermark()
  local rows = self:query("SELECT phase, full_key, position, sink_table FROM " ..
    schema.qname(self.wm_db, "watermark") .. " WHERE pipeline = '" .. self.c:escape(self.pipeline) ..
    "' AND source_table = '" .. self.c:escape(source_table) .. "'", "reading the watermark")
  local r = rows[1]
  if not r then return nil end
  local function dec(v) if type(v) == "string" and v ~= "" then return cjson.decode(v) end end
  return { phase = r[1], full_key = dec(r[2]), position = dec(r[3]), sink_table = r[4] }
end

function Sink:watermark_sql(source_table, sink_table, phase, full_key, position)
  local function enc(v) return v and ("'" .. self.c:escape(cjson.encode(v)) .. "'") or "NULL" end
  return "REPLACE INTO " .. schema.qname(self.wm_db, "watermark") ..
    " (pipeline, source_table, sink_table, phase, full_key, position, updated_at) VALUES ('" ..
    self.c:escape(self.pipeline) .. "', '" .. self.c:escape(source_table) .. "', '" ..
    self.c:escape(sink_table) .. "', '" .. phase .. "', " .. enc(full_key) .. ", " .. enc(position) ..
    ", UTC_TIMESTAMP(6))"
end

-- Write a table's watermark inside the open transaction.
function Sink:set_watermark(source_table, sink_table, phase, full_key, pos)
  self:exec(self:watermark_sql(source_table, sink_table, phase, full_key, pos), "writing the watermark")
end

-- A table without a key cannot resume a partial copy: empty it first.
function Sink:clear_table(t)
  self:exec("DELETE FROM " .. schema.qname(t.dst_db, t.dst_table), "clearing " .. t.dst_db .. "." .. t.dst_table)
end

function Sink:delete_watermarks()
  self:ensure_watermark()
  self:exec("DELETE FROM " .. schema.qname(self.wm_db, "watermark") .. " WHERE pipeline = '" ..
    self.c:escape(self.pipeline) .. "'", "deleting watermarks")
end

function Sink:begin()
  self:exec("START TRANSACTION", "START TRANSACTION")
  self.in_txn = true
end

function Sink:commit()
  self:exec("COMMIT", "COMMIT")
  self.in_txn = false
end

function Sink:rollback()
  if self.in_txn then
    pcall(self.c.exec, self.c, "ROLLBACK")
    self.in_txn = false
  end
end

-- Make sure the sink table exists with compatible columns.
-- t: {src_label, dst_db, dst_table, columns (what we write), create_sql (source DDL)}
function Sink:prepare_table(t, names_only, skip_compare)
  local label = t.dst_db .. "." .. t.dst_table
  if not schema.database_exists(self.c, t.dst_db) then
    self:exec("CREATE DATABASE IF NOT EXISTS " .. schema.qi(t.dst_db), "creating database " .. t.dst_db)
    log.info("created sink database %s", t.dst_db)
  end
  if not schema.table_exists(self.c, t.dst_db, t.dst_table) then
    if not t.create_sql then
      errors.raise(string.format("sink table %s does not exist and cannot be created from the source; create it first", label))
    end
    self:exec(schema.sink_ddl(t.create_sql, t.dst_db, t.dst_table, self.dialect), "creating table " .. label)
    log.info("created sink table %s from %s", label, t.src_label)
  end
  local dst_cols = schema.columns(self.c, t.dst_db, t.dst_table)
  -- a table already streaming is compared by its DDL events, not by today's source schema
  local diff = not skip_compare and schema.compare(t.src_label, t.columns, label, dst_cols, names_only)
  if diff then
    errors.raise(string.format("schema mismatch: %s; make the sink table match the source, or drop it and mocdc will create it", diff))
  end
  t.dst_columns = dst_cols
  return dst_cols
end

-- LOAD DATA statement for a table: BIT columns go through a user variable.
function Sink:load_sql(t)
  local cols, sets = {}, {}
  for i, c in ipairs(t.columns) do
    if c.class == "bit" then
      cols[#cols + 1] = "@v" .. i
      sets[#sets + 1] = schema.qi(c.name) .. " = CAST(@v" .. i .. " AS UNSIGNED)"
    else
      cols[#cols + 1] = schema.qi(c.name)
    end
  end
  return "LOAD DATA LOCAL INFILE 'mocdc-stream' REPLACE INTO TABLE " .. schema.qname(t.dst_db, t.dst_table) ..
    " CHARACTER SET binary FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' (" ..
    table.concat(cols, ", ") .. ")" .. (#sets > 0 and (" SET " .. table.concat(sets, ", ")) or "")
end

-- Fail on warnings after LOAD DATA (LOCAL turns conversion errors into warnings).
function Sink:check_warnings(what)
  local rows = self:query("SHOW WARNINGS LIMIT 3", "SHOW WARNINGS")
  for _, r in ipairs(rows) do
    if r[1] ~= "Note" then
      errors.raise(string.format("sink %s: %s: %s %s: %s (the data would not be stored exactly)",
        self.c.label, what, r[1], r[2], r[3]))
    end
  end
end

-- Stream up to max_rows rows from a source cursor into the table, in the open transaction.
function Sink:load_chunk(cursor, t, max_rows)
  t.load_sql = t.load_sql or self:load_sql(t)
  local rows, bytes, last_key, warnings = self.c:load_from(cursor, t.load_sql,
    { max_rows = max_rows, key_cols = t.key_idx })
  if not rows then
    self.in_txn = false -- a failed load closes the sink connection (the server rolls back)
    errors.raise(string.format("copying %s to %s.%s failed: %s", t.src_label, t.dst_db, t.dst_table,
      tostring(bytes)), last_key)
  end
  if rows > 0 and (warnings == nil or warnings > 0) then
    self:check_warnings("loading " .. t.dst_db .. "." .. t.dst_table)
  end
  return rows, bytes, last_key
end

-- Apply a batch (rows already in sink column order) with the SQL builder.
function Sink:apply_batch(batch, t, mode)
  local stmts, err = sqlbuild.build(batch, { table = schema.qname(t.dst_db, t.dst_table),
    key = t.dst_key_idx or t.key_idx, mode = mode or "replace", dialect = self.dialect, max_len = self.max_sql })
  if not stmts then
    errors.raise(string.format("sink %s.%s: %s", t.dst_db, t.dst_table, err))
  end
  for _, sql in ipairs(stmts) do
    self:exec(sql, "writing to " .. t.dst_db .. "." .. t.dst_table)
  end
  return #stmts
end

-- Apply a batch of binlog changes (columns as the source wrote them) in the
-- open transaction: key columns located by name, REPLACE/DELETE by key;
-- tables without a key use the builder's all-columns strategy.
function Sink:apply_changes(t, b)
  local cols = b:columns()
  local key = {}
  for _, k in ipairs(t.key) do
    for i, c in ipairs(cols) do
      if c.name:lower() == k:lower() then key[#key + 1] = i break end
    end
  end
  if #key ~= #t.key then
    errors.raise(string.format("changes of %s do not carry key column(s) %s; check idCols", t.src_label,
      table.concat(t.key, ",")))
  end
  local stmts, err = sqlbuild.build(b, { table = schema.qname(t.dst_db, t.dst_table), key = key,
    mode = #key > 0 and "replace" or "insert", dialect = self.dialect, max_len = self.max_sql })
  if not stmts then errors.raise(string.format("sink %s.%s: %s", t.dst_db, t.dst_table, err)) end
  for _, sql in ipairs(stmts) do
    self:exec(sql, "writing to " .. t.dst_db .. "." .. t.dst_table)
  end
end

function Sink:close()
  if self.c then self.c:close() end
end

return M
