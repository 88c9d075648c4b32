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
  local c, err, errno, sqlstate = conn.open(uri, { role = "sink", local_infile = true, password = opts.password,
    read_timeout = opts.sendSqlTimeout, write_timeout = opts.sendSqlTimeout })
  if not c then errors.open_failed(err, errno, nil, sqlstate) end
  local self = setmetatable({ kind = "mysql", c = c, uri = uri, pipeline = opts.pipeline or "default",
    dialect = opts.dialect or (c.flavour == "matrixone" and "matrixone" or "mysql"),
    wm_db = opts.watermarkDatabase or "mocdc", in_txn = false, prepared = {} }, Sink)
  local map = tonumber(c:variable("max_allowed_packet")) or DEFAULT_MAX_SQL
  -- the longest statement the sink accepts: its packet carries one command byte more, and a
  -- packet of max_allowed_packet bytes is already refused (error 1153)
  local usable = map - 2
  local limit = math.min(DEFAULT_MAX_SQL, usable)
  if opts.maxSqlLength then
    local n = tonumber(opts.maxSqlLength)
    if not n or n < 1024 then
      errors.raise(string.format("maxSqlLength '%s' is not a byte count >= 1024", tostring(opts.maxSqlLength)), 2)
    end
    if n > usable then
      errors.raise(string.format("maxSqlLength %d is larger than the sink's max_allowed_packet %d allows (statements " ..
        "of at most %d bytes); lower it or raise max_allowed_packet", n, map, usable), 2)
    end
    limit = n
  end
  self.max_sql, self.max_packet = limit, map
  self.send_sql_timeout = opts.sendSqlTimeout
  local eh = opts.errorHandleOption or "stop"
  if eh ~= "stop" and eh ~= "ignore" then
    errors.raise(string.format("errorHandleOption '%s' must be stop or ignore", tostring(eh)), 2)
  end
  self.ignore = eh == "ignore"
  self.dead_letter = opts.deadLetter
  self.on_dead_letter = opts.onDeadLetter
  -- error-handle-option=ignore needs row-level failures: the full copy then
  -- takes the SQL path (apply_batch), whose failing rows become dead letters
  self.use_load_data = self.dialect == "mysql" and opts.loadData ~= false and not self.ignore and
    tostring(c:variable("local_infile") or "ON"):upper() ~= "OFF"
  return self
end

-- engine/binlog.lua may merge the batches of consecutive source transactions before
-- apply_changes (it only needs the rows, not the event of each batch).
Sink.merges_batches = true

function Sink:label() return self.c.label end

-- What to do about the sink errors a user can fix.
local HINTS = {
  [1114] = "the sink is full: free space or raise its limits, then resume",
  [1021] = "the sink's disk is full: free space, then resume",
  [3] = "the sink could not write a file (disk full?): free space, then resume",
  [1153] = "the statement exceeded the sink's max_allowed_packet: lower maxSqlLength / --max-sql-length or raise max_allowed_packet",
  [1142] = "grant the sink user INSERT, UPDATE, DELETE, CREATE on the target database",
  [1044] = "grant the sink user access to the target database",
  [1146] = "the sink table is gone: re-create it (or drop the watermark to start over with a full copy)",
  [1054] = "the sink table's columns differ from the source: make them match (mergeSchema applies source DDL)",
  [1406] = "a value does not fit the sink column: widen the sink column to match the source",
  [1264] = "a value is out of the sink column's range: make the sink column type match the source",
  [4025] = "a CHECK constraint on the sink rejects the row: drop or fix it, or use error-handle-option=ignore",
}

function M.hint(code)
  local h = code and HINTS[code]
  return h and ("; " .. h) or ""
end

-- The hint for a failed write; a connection lost while sendSqlTimeout is set
-- may be that timeout cutting a slow statement off.
function Sink:hint(code)
  local h = M.hint(code)
  if code == 2013 and self.send_sql_timeout then
    h = h .. string.format("; sendSqlTimeout = %s s cuts off a statement the sink has not answered by then " ..
      "(raise it if statements take that long)", tostring(self.send_sql_timeout))
  end
  return h
end

-- The hint for a failed write of t's rows: errorHandleOption = ignore never
-- skips a keyless table's rows (replaying them one by one could double rows).
function Sink:write_hint(t, code, state)
  if self.ignore and #(t.key or t.key_idx or {}) == 0 and not errors.transient(code, state) then
    return string.format("; %s has no key: its rows are never skipped one by one (that could double rows); " ..
      "fix the sink or the row, or give idCols", t.src_label)
  end
  return self:hint(code)
end

-- Pipelined apply (sink.pipelined = sink:can_pipeline(), set by engine/binlog.lua): the
-- last statement of each apply_changes() is sent without waiting for its
-- result, so the sink executes it while mocdc reads and decodes the next source
-- events. Its result is collected (reap) before anything else uses the
-- connection through the sink: the next statement, the watermark, COMMIT,
-- ROLLBACK (a caller using sink.c directly must call sink:reap() first). Needs
-- a connection with send/reap (mocdc.conn has them; the MatrixOne emulator of
-- the specs does not); never with errorHandleOption=ignore (a failing
-- batch is then replayed row by row, which needs the batch at hand).
function Sink:can_pipeline()
  return not self.ignore and self.c.send ~= nil and self.c.reap ~= nil
end

function Sink:reap()
  local t = self.inflight_t
  if not t then return end
  self.inflight_t = nil
  local n, err, code, state = self.c:reap()
  if not n then
    errors.raise_sql(string.format("sink %s: writing to %s.%s failed: %s%s%s", self.c.label, t.dst_db, t.dst_table, err,
      code and (" (error " .. code .. ")") or "", self:hint(code)), code, state)
  end
end

function Sink:exec(sql, what)
  self:reap()
  local n, err, code, state = self.c:exec(sql)
  if not n then
    errors.raise_sql(string.format("sink %s: %s failed: %s%s%s", self.c.label, what or "statement", err,
      code and (" (error " .. code .. ")") or "", self:hint(code)), code, state)
  end
  return n
end

function Sink:query(sql, what)
  self:reap()
  local rows, err, code, state = self.c:query(sql)
  if not rows then
    errors.raise_sql(string.format("sink %s: %s failed: %s", self.c.label, what or "query", err), code, state)
  end
  return rows
end

-- One watermark row per (pipeline, source table, sink table): a stream given
-- a new target has no watermark for it and copies it in full. Earlier versions
-- keyed the rows by (pipeline, source_table) only; their rows already name the
-- sink table they were written for, so widening the key keeps them valid for
-- that target (and only for it).
function Sink:ensure_watermark()
  if self.wm_ready then return end
  local wm = schema.qname(self.wm_db, "watermark")
  self:exec("CREATE DATABASE IF NOT EXISTS " .. schema.qi(self.wm_db), "creating the watermark database")
  self:exec("CREATE TABLE IF NOT EXISTS " .. wm .. [[ (
  pipeline VARCHAR(128) NOT NULL,
  source_table VARCHAR(256) NOT NULL,
  sink_table VARCHAR(256) NOT NULL,
  phase VARCHAR(16) NOT NULL,
  full_key TEXT NULL,
  position TEXT NULL,
  updated_at DATETIME(6) NOT NULL,
  PRIMARY KEY (pipeline, source_table, sink_table))]], "creating the watermark table")
  local key = schema.primary_key(self.c, self.wm_db, "watermark")
  if #key == 2 then
    -- (VARCHAR(256): the three-column key fits InnoDB's 3072 bytes in utf8mb4; names are <= 129 characters)
    self:exec("ALTER TABLE " .. wm .. " MODIFY source_table VARCHAR(256) NOT NULL, MODIFY sink_table VARCHAR(256) NOT NULL, " ..
      "DROP PRIMARY KEY, ADD PRIMARY KEY (pipeline, source_table, sink_table)",
      "adding sink_table to the key of " .. self.wm_db .. ".watermark")
    log.info("watermark table %s.watermark: rows are now per (pipeline, source table, sink table)", self.wm_db)
  end
  self:exec("CREATE TABLE IF NOT EXISTS " .. schema.qname(self.wm_db, "writer") .. [[ (
  pipeline VARCHAR(128) NOT NULL,
  epoch BIGINT NOT NULL,
  owner VARCHAR(1024) NOT NULL,
  active TINYINT NOT NULL,
  since DATETIME(6) NOT NULL,
  PRIMARY KEY (pipeline))]], "creating the writer table")
  self.wm_ready = true
end

-- One writer per stream. claim(who) makes this run the stream's writer: the
-- pipeline's row in mocdc.writer gets a new epoch and names `who`. Every sink
-- transaction then starts by locking that row and checking the epoch
-- (check_writer), so once a second run (another checkpointLocation, another
-- host) has claimed the stream, the older run's next transaction fails before
-- it writes anything; the claim waits for a transaction of the older run that
-- is under way, so it sees everything that one committed.
-- held: the epoch this process held before (a retry reconnecting, see
-- mocdc.pipeline.retry): the stream is claimed again only if nobody took it meanwhile.
function Sink:claim(who, held)
  self:ensure_watermark()
  local wt, p = schema.qname(self.wm_db, "writer"), "'" .. self.c:escape(self.pipeline) .. "'"
  self:exec("START TRANSACTION", "claiming the stream")
  local ok, err = pcall(function()
    local prev = self:query("SELECT epoch, owner, active FROM " .. wt .. " WHERE pipeline = " .. p .. " FOR UPDATE",
      "claiming the stream")[1]
    local epoch = prev and (tonumber(prev[1]) + 1) or 1
    if held and (not prev or tonumber(prev[1]) ~= held) then
      errors.raise(string.format("stream '%s' on sink %s was taken over by %s (writer epoch %s, this run had %d) " ..
        "while this run was reconnecting: it stops without writing more; a stream has one writer", self.pipeline,
        self.c.label, prev and tostring(prev[2]) or "nobody (its writer row was removed: task restart/drop?)",
        prev and tostring(prev[1]) or "none", held))
    end
    local owner = "'" .. self.c:escape(who) .. "'"
    if prev then
      self:exec("UPDATE " .. wt .. " SET epoch = " .. epoch .. ", owner = " .. owner .. ", active = 1, " ..
        "since = UTC_TIMESTAMP(6) WHERE pipeline = " .. p, "claiming the stream")
    else
      self:exec("INSERT INTO " .. wt .. " (pipeline, epoch, owner, active, since) VALUES (" .. p .. ", " .. epoch ..
        ", " .. owner .. ", 1, UTC_TIMESTAMP(6))", "claiming the stream")
    end
    self:exec("COMMIT", "claiming the stream")
    if prev and tostring(prev[3]) == "1" and not held then
      log.warn("stream '%s' on sink %s: taking over from %s (writer epoch %d); its next sink transaction fails",
        self.pipeline, self.c.label, tostring(prev[2]), epoch)
    end
    self.epoch = epoch
  end)
  if not ok then
    pcall(self.c.exec, self.c, "ROLLBACK")
    error(err, 0)
  end
end

-- Inside the open transaction: is this run still the stream's writer?
function Sink:check_writer()
  local r = self:query("SELECT epoch, owner FROM " .. schema.qname(self.wm_db, "writer") .. " WHERE pipeline = '" ..
    self.c:escape(self.pipeline) .. "' FOR UPDATE", "checking the stream's writer")[1]
  local mine = self.epoch
  if r and tonumber(r[1]) == mine then return end
  self:rollback()
  self.epoch = nil -- not ours any more: close() leaves the row alone
  errors.raise(string.format("stream '%s' on sink %s was taken over by %s (writer epoch %s, this run had %d): " ..
    "this run stops without writing more; a stream has one writer — stop the other run before starting this one again",
    self.pipeline, self.c.label, r and tostring(r[2]) or "nobody (its writer row was removed: task restart/drop?)",
    r and tostring(r[1]) or "none", mine))
end

-- The watermark row of one source table written to one sink table, or nil.
function Sink:read_watermark(source_table, sink_table)
  assert(sink_table, "internal: read_watermark needs the sink table")
  self:ensure_watermark()
  local rows = self:query("SELECT phase, full_key, position, sink_table FROM " ..
    schema.qname(self.wm_db, "watermark") .. " WHERE pipeline = '" .. self.c:escape(self.pipeline) ..
    "' AND source_table = '" .. self.c:escape(source_table) .. "' AND sink_table = '" ..
    self.c:escape(sink_table) .. "'", "reading the watermark")
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
  self:begin()
  self:exec("DELETE FROM " .. schema.qname(t.dst_db, t.dst_table), "clearing " .. t.dst_db .. "." .. t.dst_table)
  self:commit()
end

function Sink:delete_watermarks()
  self:ensure_watermark()
  self:exec("DELETE FROM " .. schema.qname(self.wm_db, "watermark") .. " WHERE pipeline = '" ..
    self.c:escape(self.pipeline) .. "'", "deleting watermarks")
  self:exec("DELETE FROM " .. schema.qname(self.wm_db, "writer") .. " WHERE pipeline = '" ..
    self.c:escape(self.pipeline) .. "'", "deleting the writer row")
end

function Sink:begin()
  self:exec("START TRANSACTION", "START TRANSACTION")
  self.in_txn = true
  if self.epoch then self:check_writer() end
end

function Sink:commit()
  self:exec("COMMIT", "COMMIT")
  self.in_txn = false
end

function Sink:rollback()
  if self.inflight_t then pcall(self.reap, self) end
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
      errors.raise(string.format("sink table %s does not exist and cannot be created from the source; create it first", label), 2)
    end
    self:exec(schema.sink_ddl(t.create_sql, t.dst_db, t.dst_table, self.dialect), "creating table " .. label)
    log.info("created sink table %s from %s", label, t.src_label)
  end
  local dst_cols = schema.columns(self.c, t.dst_db, t.dst_table)
  -- a table already streaming is compared by its DDL events, not by today's source schema
  local diff = not skip_compare and schema.compare(t.src_label, t.columns, label, dst_cols, names_only, t.generated)
  if diff then
    errors.raise(string.format("schema mismatch: %s; make the sink table match the source, or drop it and mocdc will create it", diff), 2)
  end
  t.dst_columns = dst_cols
  return dst_cols
end

-- Apply one source DDL statement on table t (mergeSchema) to its sink table:
-- x = {verb = ALTER | TRUNCATE | DROP | CREATE, rest = what follows the name}
-- (cdc.ddl_targets). Returns true when a statement ran.
local DDL_DONE = { [1060] = 1, [1061] = 1, [1091] = 1, [1050] = 1, [1054] = 1 }
function Sink:apply_ddl(t, x)
  local dst = schema.qname(t.dst_db, t.dst_table)
  local sql
  if x.verb == "ALTER" then sql = "ALTER TABLE " .. dst .. x.rest
  elseif x.verb == "TRUNCATE" then sql = "TRUNCATE TABLE " .. dst
  elseif x.verb == "DROP" then sql = "DROP TABLE IF EXISTS " .. dst
  elseif x.verb == "CREATE" then sql = "CREATE TABLE IF NOT EXISTS " .. dst .. x.rest
  else return false end
  self:reap()
  local n, err, code, state = self.c:exec(sql)
  -- already applied before a crash: duplicate column/key, unknown column/key, table exists
  if not n and not DDL_DONE[code] then
    errors.raise_sql(string.format("applying source DDL to sink table %s.%s failed: %s (statement: %s)",
      t.dst_db, t.dst_table, err, sql), code, state)
  end
  log.info("applied source DDL to %s.%s: %s", t.dst_db, t.dst_table, sql)
  return true
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
  t.load_sql = t.load_sql or conn.load_data_sql(schema.qname(t.dst_db, t.dst_table), t.columns, { mode = "replace" })
  local rows, bytes, last_key, warnings = self.c:load_from(cursor, t.load_sql,
    { max_rows = max_rows, key_cols = t.key_idx })
  if not rows then
    self.in_txn = false -- a failed load closes the sink connection (the server rolls back)
    -- on failure: nil, msg, errno, sqlstate
    errors.raise_sql(string.format("copying %s to %s.%s failed: %s%s", t.src_label, t.dst_db, t.dst_table,
      tostring(bytes), M.hint(last_key)), last_key, warnings)
  end
  if rows > 0 and (warnings == nil or warnings > 0) then
    self:check_warnings("loading " .. t.dst_db .. "." .. t.dst_table)
  end
  return rows, bytes, last_key
end

-- The builder refuses a row longer than max_sql (its message names the row).
function Sink:too_long(t, err)
  errors.raise(string.format("sink %s.%s: %s; raise maxSqlLength (save option; --max-sql-length for tasks) above " ..
    "that, and the sink's max_allowed_packet (now %d) if it is smaller", t.dst_db, t.dst_table, err, self.max_packet))
end

-- Apply a batch (rows already in sink column order) with the SQL builder.
function Sink:apply_batch(batch, t, mode)
  local opts = { table = schema.qname(t.dst_db, t.dst_table),
    key = t.dst_key_idx or t.key_idx, mode = mode or "replace", dialect = self.dialect, max_len = self.max_sql }
  local stmts, err = sqlbuild.build(batch, opts)
  if not stmts then
    if self.ignore and #opts.key > 0 then self:apply_one_by_one(t, batch, opts) return 0 end
    self:too_long(t, err)
  end
  self:reap()
  for _, sql in ipairs(stmts) do
    local n, eerr, code, state = self.c:exec(sql)
    if not n then
      -- error-handle-option=ignore: as in apply_changes (REPLACE by key is idempotent)
      if self.ignore and #opts.key > 0 and not errors.transient(code, state) then
        self:apply_one_by_one(t, batch, opts)
        return #stmts
      end
      errors.raise_sql(string.format("sink %s: writing to %s.%s failed: %s%s%s", self.c.label, t.dst_db, t.dst_table, eerr,
        code and (" (error " .. code .. ")") or "", self:write_hint(t, code, state)), code, state)
    end
  end
  return #stmts
end

-- Indexes of the batch columns that are generated in the source table (the
-- binlog carries their values; the sink computes them), or nil.
function M.generated_idx(t, cols)
  if not t.generated_set then return nil end
  local skip
  for i, c in ipairs(cols) do
    if t.generated_set[c.name:lower()] then
      skip = skip or {}
      skip[#skip + 1] = i
    end
  end
  return skip
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
  local opts = { table = schema.qname(t.dst_db, t.dst_table), key = key,
    mode = #key > 0 and "replace" or "insert", dialect = self.dialect, max_len = self.max_sql,
    skip = M.generated_idx(t, cols) }
  local stmts, err = sqlbuild.build(b, opts)
  if not stmts then
    if self.ignore and #key > 0 then return self:apply_one_by_one(t, b, opts) end
    self:too_long(t, err)
  end
  self:reap()
  for i, sql in ipairs(stmts) do
    local n, eerr, code, state
    if self.pipelined and i == #stmts then
      n, eerr, code, state = self.c:send(sql)
      if n then self.inflight_t = t end
    else
      n, eerr, code, state = self.c:exec(sql)
    end
    if not n then
      -- error-handle-option=ignore: replay this batch row by row (REPLACE/DELETE
      -- by key are idempotent) and record each failing row as a dead letter.
      -- Transient errors and keyless tables (plain INSERTs) are never skipped.
      if self.ignore and #key > 0 and not errors.transient(code, state) then
        return self:apply_one_by_one(t, b, opts)
      end
      errors.raise_sql(string.format("sink %s: writing to %s.%s failed: %s%s%s", self.c.label, t.dst_db, t.dst_table, eerr,
        code and (" (error " .. code .. ")") or "", self:write_hint(t, code, state)), code, state)
    end
  end
end

function Sink:apply_one_by_one(t, b, opts)
  local batchlib = require("mocdc.batch")
  local cols = b:columns()
  local one = batchlib.new(cols)
  local dead = {}
  for i = 1, b:count() do
    one:clear()
    local op, before, after = b:get(i)
    one:add(op, before, after)
    local stmts, berr = sqlbuild.build(one, opts)
    local failed_sql, failed_err, failed_code
    if not stmts then
      failed_err = berr
    else
      for _, sql in ipairs(stmts) do
        local n, eerr, code, state = self.c:exec(sql)
        if not n then
          if errors.transient(code, state) then -- never skipped: retried by the job's retry policy
            errors.raise_sql(string.format("sink %s: writing to %s.%s failed: %s (error %s)", self.c.label, t.dst_db,
              t.dst_table, eerr, tostring(code)), code, state)
          end
          failed_sql, failed_err, failed_code = sql, eerr, code
          break
        end
      end
    end
    if failed_err then
      local _, bn, an = b:get_named(i)
      local img = an or bn or {}
      local k = {}
      for _, ki in ipairs(opts.key) do k[cols[ki].name] = img[cols[ki].name] end
      dead[#dead + 1] = cjson.encode({ time = require("mocdc.log").timestamp(), table = t.src_label,
        sink_table = t.dst_db .. "." .. t.dst_table, op = op, key = k,
        statement = failed_sql and failed_sql:sub(1, 4096) or cjson.null, error = failed_err, errno = failed_code })
    end
  end
  one:free()
  if #dead > 0 then
    local path = self.dead_letter or "dead_letter.jsonl"
    local util = require("mocdc.util.lib")
    util.mkdir_p(path:match("^(.*)/[^/]*$") or ".")
    local f = io.open(path, "a")
    if not f then errors.raise("cannot write the dead-letter file " .. path) end
    f:write(table.concat(dead, "\n"), "\n")
    util.fsync(f)
    f:close()
    log.warn("ignored %d failing row(s) of %s (error-handle-option=ignore), recorded in %s", #dead, t.src_label, path)
    if self.on_dead_letter then self.on_dead_letter(#dead, path) end
  end
end

function Sink:close()
  if self.c and self.epoch then
    -- a clean end: the next run claims the stream without a takeover warning
    pcall(self.c.exec, self.c, "UPDATE " .. schema.qname(self.wm_db, "writer") .. " SET active = 0 WHERE pipeline = '" ..
      self.c:escape(self.pipeline) .. "' AND epoch = " .. self.epoch)
    self.epoch = nil
  end
  if self.c then self.c:close() end
end

return M
