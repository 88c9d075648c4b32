-- The binlog pipeline: a consistent full copy taken at a binlog position,
-- then every row change from the binlog, applied in source commit order.
--
-- Exactly-once: each sink transaction ends on a source commit boundary and
-- carries the watermark rows (one per table: the binlog position after the
-- last applied source transaction); the local checkpoint store mirrors them.
-- On restart the sink's watermark wins, and transactions that started before
-- a table's watermark are skipped for that table, so nothing is applied twice.
-- Several source transactions may share one sink transaction (fewer commits),
-- and a sink transaction is committed as soon as the stream goes idle.
local binlog = require("mocdc.binlog")
local batchlib = require("mocdc.batch")
local copy = require("mocdc.engine.copy")
local errors = require("mocdc.errors")
local log = require("mocdc.log")
local position = require("mocdc.position")
local schema = require("mocdc.schema")
local snapshot = require("mocdc.source.mysql")
local stream = require("mocdc.pipeline.stream")
local util = require("mocdc.util.lib")

local M = {}

local truthy = require("mocdc.pipeline.options").truthy

local function row_of(c, sql)
  local rows, err, code, state = c:query(sql)
  if not rows then errors.raise_sql(string.format("source %s: %s failed: %s", c.label, sql, err), code, state) end
  return rows
end

-- Refuse a source whose binlog cannot drive row-level CDC.
function M.check_binlog_settings(c)
  local r = row_of(c, "SELECT @@log_bin, @@binlog_format, @@binlog_row_image")[1]
  local lbl = c.label
  if tostring(r[1]) ~= "1" then
    errors.raise(string.format("source %s has log_bin=OFF; the binlog source needs log_bin=ON and binlog_format=ROW " ..
      "(add log_bin and binlog_format=ROW to my.cnf and restart), or use load.snapshot", lbl), 2)
  end
  if tostring(r[2]):upper() ~= "ROW" then
    errors.raise(string.format("source %s has binlog_format=%s; mocdc needs binlog_format=ROW " ..
      "(SET GLOBAL binlog_format=ROW, or binlog_format=ROW in my.cnf)", lbl, tostring(r[2])), 2)
  end
  if tostring(r[3]):upper() ~= "FULL" then
    errors.raise(string.format("source %s has binlog_row_image=%s; mocdc needs binlog_row_image=FULL " ..
      "(SET GLOBAL binlog_row_image=FULL)", lbl, tostring(r[3])), 2)
  end
end

-- The source's current binlog position (raises a clear error when there is none).
function M.master_status(c)
  local p, err, errno = binlog.master_status(c)
  if not p then errors.raise_sql("source " .. c.label .. ": " .. tostring(err), errno) end
  return p
end

-- The oldest binlog still on the source, from its start.
function M.first_binlog(c)
  local logs, err, errno = binlog.binary_logs(c)
  if not logs or not logs[1] then
    errors.raise_sql("source " .. c.label .. ": SHOW BINARY LOGS failed: " .. tostring(err), errno)
  end
  return { file = logs[1].file, pos = 4 }
end

-- MLSQL start options: bingLogNamePrefix + binlogIndex + binlogFileOffset.
function M.explicit_start(o)
  local gtid = o.startGtid or o.gtid
  if gtid and o.binlogIndex == nil and o.binlogFile == nil then
    if not tostring(gtid):match("^%d+%-%d+%-%d+") then
      errors.raise(string.format("startGtid '%s' is not a MariaDB GTID (domain-server-seq, e.g. 0-1-42)", tostring(gtid)), 2)
    end
    return { gtid = tostring(gtid) }
  end
  if o.binlogIndex == nil and o.binlogFile == nil then return nil end
  local file = o.binlogFile
  if not file then
    local idx = tonumber(o.binlogIndex)
    if not idx then errors.raise(string.format("binlogIndex '%s' is not a number", tostring(o.binlogIndex)), 2) end
    file = string.format("%s.%06d", o.bingLogNamePrefix or "mysql-bin", idx)
  end
  local pos = tonumber(o.binlogFileOffset or 4)
  if not pos then errors.raise(string.format("binlogFileOffset '%s' is not a number", tostring(o.binlogFileOffset)), 2) end
  return { file = file, pos = pos }
end

-- Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end

-- "YYYY-MM-DD HH:MM:SS" (UTC) -> unix seconds, whatever the local time zone
-- (no os.time: it reads local time, and a zone's offset in 1970 need not be today's)
function M.parse_ts(name, s)
  if s == nil or s == "" then return nil end
  if type(s) == "number" then return s end
  local y, mo, d, h, mi, se = tostring(s):match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[ T](%d%d):(%d%d):(%d%d)")
  y, mo, d, h, mi, se = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(se)
  if not y or mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or se > 59 then
    errors.raise(string.format("%s '%s' is not a timestamp (expected YYYY-MM-DD HH:MM:SS, UTC)", name, tostring(s)), 2)
  end
  return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se
end

-- Names a DDL statement touches: list of {db, table, verb}.
function M.ddl_targets(sql, default_db)
  local s = sql:gsub("/%*.-%*/", " "):gsub("^%s+", "")
  local up = s:upper()
  local out = {}
  local verb, rest
  for _, v in ipairs({ "ALTER TABLE", "CREATE TABLE", "DROP TABLE", "TRUNCATE TABLE", "TRUNCATE", "RENAME TABLE",
    "CREATE OR REPLACE TABLE", "ALTER ONLINE TABLE", "ALTER IGNORE TABLE" }) do
    if up:sub(1, #v) == v and up:sub(#v + 1, #v + 1):match("%s") then verb, rest = v, s:sub(#v + 2) break end
  end
  if not verb then return out, nil end
  rest = rest:gsub("^%s+", ""):gsub("^[Ii][Ff]%s+[Nn][Oo][Tt]%s+[Ee][Xx][Ii][Ss][Tt][Ss]%s+", "")
    :gsub("^[Ii][Ff]%s+[Ee][Xx][Ii][Ss][Tt][Ss]%s+", "")
  local kind = verb:match("^(%u+)")
  if verb == "CREATE OR REPLACE TABLE" then kind = "CREATE" end
  if kind == "DROP" or kind == "RENAME" then
    -- DROP TABLE a, b / RENAME TABLE a TO b, c TO d
    while true do
      local db, t, after = schema.read_qname(rest, default_db)
      if not t then break end
      local x = { db = db, table = t, verb = kind }
      if kind == "RENAME" then
        local to = after:match("^%s+[Tt][Oo]%s+(.*)$")
        if not to then break end
        x.to_db, x.to_table, after = schema.read_qname(to, default_db)
        if not x.to_table then break end
      end
      out[#out + 1] = x
      rest = after:match("^%s*,(.*)$")
      if not rest then break end
    end
  else
    local db, t, after = schema.read_qname(rest, default_db)
    out[#out + 1] = { db = db, table = t, verb = kind, rest = after or "" }
  end
  return out, kind
end

-- The tables a DML statement logged in STATEMENT format writes: list of
-- {db, table}, or nil for the multi-table UPDATE / DELETE forms (the caller
-- then takes every table the statement mentions).
function M.dml_targets(sql, default_db)
  local s = sql:gsub("/%*.-%*/", " ")
  local verb, rest = s:match("^%s*(%a+)%s+(.*)$")
  if not verb then return nil end
  verb = verb:upper()
  local function skip(words)
    while true do
      local w, after = rest:match("^%s*([%a_]+)%s+(.*)$")
      if not w or not words[w:upper()] then return end
      rest = after
    end
  end
  if verb == "LOAD" then
    rest = rest:match("[Ii][Nn][Tt][Oo]%s+[Tt][Aa][Bb][Ll][Ee]%s+(.*)$")
    if not rest then return nil end
  elseif verb == "INSERT" or verb == "REPLACE" then
    skip({ LOW_PRIORITY = 1, DELAYED = 1, HIGH_PRIORITY = 1, IGNORE = 1, INTO = 1 })
  elseif verb == "UPDATE" then
    skip({ LOW_PRIORITY = 1, IGNORE = 1 })
  elseif verb == "DELETE" then
    skip({ LOW_PRIORITY = 1, QUICK = 1, IGNORE = 1 })
    local from = rest:match("^[Ff][Rr][Oo][Mm]%s+(.*)$")
    if not from then return nil end -- DELETE t1, t2 FROM ...
    rest = from
  else
    return nil
  end
  local db, t, after = schema.read_qname(rest, default_db)
  if not t then return nil end
  if verb == "UPDATE" then
    -- single-table: [[AS] alias] SET
    local a = after:gsub("^%s+[Aa][Ss]%s+", " ")
    local w = a:match("^%s*([%a_]+)")
    if w and w:upper() ~= "SET" then w = a:match("^%s*[%w_$]+%s+([%a_]+)") end
    if not w or w:upper() ~= "SET" then return nil end
  elseif verb == "DELETE" and (after:match("^%s*,") or after:match("^%s+[Uu][Ss][Ii][Nn][Gg]%s")) then
    return nil
  end
  return { { db = db, table = t } }
end

-- What to do when the binlog a checkpoint needs is gone (purged, or the
-- history changed under it).
M.FULL_COPY_HINT = "re-run with a full copy (drop the sink watermark: mocdc task restart, or delete " ..
  "checkpointLocation and the mocdc.watermark rows)"

-- A saved position must still be in the history it was taken from (see
-- binlog.check_history); a changed history is the log gone.
function M.check_history(c, p)
  local ok, what = binlog.check_history(c, p)
  if ok then return end
  if ok == nil then
    errors.raise(string.format("source %s: cannot check that the saved position %s is still in its binlog history: %s",
      c.label, position.format(p), tostring(what)))
  end
  errors.raise(string.format("source %s: its binlog history changed since the checkpoint (RESET MASTER, a restore, " ..
    "or another server at that address): the saved position %s %s; the changes since then cannot be read from it: %s",
    c.label, position.format(p), what, M.FULL_COPY_HINT))
end

local Runner = {}
Runner.__index = Runner

function M.run(job, ctx, run_opts)
  local o = job.stream.source.opts
  local r = setmetatable({ job = job, o = o, ctx = ctx, run_opts = run_opts or {} }, Runner)
  return r:main()
end

function Runner:open_sink()
  return require("mocdc.pipeline.job").open_sink(self.job, self.ctx.name)
end

function Runner:main()
  local o, job = self.o, self.job
  local src = snapshot.open(o)
  self.src = src
  local ok, res = pcall(function()
    M.check_binlog_settings(src.c)
    local sink = self:open_sink()
    self.sink = sink
    local store, dir = require("mocdc.pipeline.job").open_store(job, self.ctx.name)
    self.store = store
    self.merge_schema = truthy(job.opts.mergeSchema)
    self.transform = stream.compile(job.stream.transforms)
    self.start_ts = M.parse_ts("startTs", o.startTs)
    self.end_ts = M.parse_ts("endTs", o.endTs)
    if self.start_ts and self.end_ts and self.end_ts <= self.start_ts then
      errors.raise(string.format("endTs %s must be later than startTs %s", o.endTs, o.startTs), 2)
    end
    local list = src:tables()
    require("mocdc.pipeline.job").claim(sink, dir, self.ctx)
    for _, t in ipairs(list) do
      t.wm = sink:read_watermark(t.src_label, t.dst_db .. "." .. t.dst_table)
      copy.prepare(t, sink, job.stream.transforms, t.wm ~= nil and t.wm.phase == "cdc")
    end
    self.tables, self.by_name = list, {}
    for _, t in ipairs(list) do self.by_name[t.src_db .. "\0" .. t.src_table] = t end
    self:initial_positions()
    if self.ctx.on_checkpoint then self.ctx.on_checkpoint(self.tables) end -- copied / positioned: in sync
    while true do
      local ok2, r = pcall(self.stream_loop, self)
      if ok2 then
        local failed = {}
        for _, t in ipairs(self.tables) do
          if t.failed then failed[#failed + 1] = t.src_label .. ": " .. t.failed end
        end
        if #failed > 0 then
          errors.raise(string.format("%d table(s) stopped, the others are in sync: %s", #failed, table.concat(failed, "; ")))
        end
        return r
      end
      if not (type(r) == "table" and r.restart_stream) then error(r, 0) end
      if self.stream_h then self.stream_h:close() self.stream_h = nil end
      self.last_commit = nil
    end
  end)
  if self.stream_h then self.stream_h:close() end
  if self.sink then pcall(self.sink.rollback, self.sink) self.sink:close() end
  if self.store then self.store:close() end
  src:close()
  if not ok then error(res, 0) end
  return res
end

-- Decide, per table, where the binlog stream starts for it; full-copy the
-- tables that have not been copied yet (unless noFull / an explicit start).
function Runner:initial_positions()
  local o, src, sink = self.o, self.src, self.sink
  local explicit = M.explicit_start(o)
  local no_full = truthy(o.noFull) or explicit ~= nil or self.start_ts ~= nil
  local need_full, fresh, checked = {}, {}, {}
  for _, t in ipairs(self.tables) do
    local saved = t.wm and t.wm.position
    if saved and not checked[position.format(saved)] then
      M.check_history(src.c, saved)
      checked[position.format(saved)] = true
    end
  end
  for _, t in ipairs(self.tables) do
    if t.wm and t.wm.phase ~= "full" and t.wm.position then
      t.pos = t.wm.position
    elseif no_full then
      fresh[#fresh + 1] = t
    else
      need_full[#need_full + 1] = t
    end
  end
  if #fresh > 0 then
    local p = explicit or (self.start_ts and M.first_binlog(src.c)) or M.master_status(src.c)
    for _, t in ipairs(fresh) do
      t.pos = position.copy(p)
      sink:begin()
      sink:set_watermark(t.src_label, t.dst_db .. "." .. t.dst_table, "cdc", nil, t.pos)
      sink:commit()
    end
    log.info("no full copy: streaming %d table(s) from %s", #fresh, position.format(p))
  end
  if #need_full > 0 then
    src.o.needPosition = true
    local p = src:begin_snapshot()
    if not p then
      errors.raise(string.format("source %s (%s) cannot report the binlog position of a consistent snapshot; " ..
        "use noFull = true with binlogIndex/binlogFileOffset after loading the tables yourself", src.c.label, src.c.flavour))
    end
    local cctx = copy.context(src, sink, self.store, self.job.stream.transforms, o, { final_phase = "cdc" })
    for _, t in ipairs(need_full) do
      -- this snapshot's position, unless copy_table resumes by key (then the earlier snapshot's)
      cctx.position, cctx.resume_position = p, t.wm and t.wm.position
      local n, el = copy.copy_table(cctx, t)
      log.info("full copy %s -> %s.%s: %d rows in %.2f s (binlog from %s)", t.src_label, t.dst_db, t.dst_table,
        n, el, position.format(cctx.position))
      t.pos = position.copy(cctx.position)
    end
    src:end_snapshot()
  end
end

function Runner:selected(db, tbl)
  local t = self.by_name[db .. "\0" .. tbl]
  return t ~= nil and not t.failed
end

-- Errors are per table: a table whose changes cannot be applied (and not a
-- transient error) is stopped with its watermark frozen; the open sink
-- transaction is rolled back and the stream restarts from the last committed
-- position for the other tables, so none of their changes is lost.
function Runner:table_failed(t, e) return self:tables_failed({ t }, e) end

function Runner:tables_failed(list, e)
  if errors.retryable(e) then error(e, 0) end
  local active = 0
  for _, x in ipairs(self.tables) do if not x.failed then active = active + 1 end end
  if active <= #list then error(e, 0) end
  self.sink:rollback()
  self.in_txn, self.mid_txn = false, false
  for _, t in ipairs(list) do
    t.failed = errors.message(e)
    log.error("table %s stopped (the other tables go on): %s", t.src_label, t.failed)
    if self.ctx.on_table_error then self.ctx.on_table_error(t, t.failed) end
  end
  error({ restart_stream = true }, 0)
end

-- A DML statement logged in STATEMENT format: its rows are not in the binlog.
-- It stops the synced tables it writes (those whose watermark it is past);
-- one on a table the pipeline does not sync is passed over.
function Runner:statement(ev, cur, txn_start)
  local targets = M.dml_targets(ev.sql or "", ev.db)
  local hit = {}
  for _, t in ipairs(self.tables) do
    local writes = false
    if targets then
      for _, x in ipairs(targets) do writes = writes or (x.db == t.src_db and x.table == t.src_table) end
    else
      -- multi-table forms: any mention of the table's name (quoted or bare) counts
      local sql = ev.sql or ""
      writes = sql:find(schema.qi(t.src_table), 1, true) ~= nil or
        (" " .. sql .. " "):find("[^%w_$`]" .. t.src_table:gsub("%p", "%%%0") .. "[^%w_$`]") ~= nil
    end
    if writes and not t.failed and position.compare(txn_start, t.pos) >= 0 then hit[#hit + 1] = t end
  end
  if #hit == 0 then return end
  local names = {}
  for i, t in ipairs(hit) do names[i] = t.src_label end
  names = table.concat(names, ", ")
  self:tables_failed(hit, errors.new(string.format("source %s logged a DML statement on %s in STATEMENT format at " ..
    "%s:%s (\"%s\"); its rows cannot be replicated: keep binlog_format=ROW for every session " ..
    "(SET GLOBAL binlog_format=ROW), then re-run with a full copy of %s", self.src.c.label, names, cur.file,
    tostring(ev.pos), (ev.sql or ""):gsub("%s+", " "):sub(1, 120), names)))
end

-- Apply one batch of changes of table t inside the open sink transaction.
function Runner:apply(t, b)
  local sink = self.sink
  if not self.in_txn then
    sink:begin()
    self.in_txn, self.txn_started, self.txn_rows = true, util.mono(), 0
  end
  if self.transform then
    b = self:transform_batch(t, b)
    if b:count() == 0 then b:free() return end
  end
  self.mid_txn = true
  local n = b:count()
  if not (self.merge_rows and self:merge(t, b, n)) then
    self:reap_sink()
    local ok, e = pcall(sink.apply_changes, sink, t, b, self.cur_ev)
    if not ok then
      if self.transform then b:free() end
      self:table_failed(t, e)
    end
  end
  if self.transform then b:free() end
  self.txn_rows = self.txn_rows + n
  self.applied = (self.applied or 0) + n
  t.applied = (t.applied or 0) + n
end

-- Batch merging (sinks with merges_batches, i.e. SQL sinks): the small
-- batches of consecutive source transactions on one table are copied into one
-- pending batch of up to batchSize rows (default 5000), applied as one
-- DELETE + one REPLACE instead of two statements per source transaction
-- (bench/binlog_apply.sh: ~15% less sink CPU, 100x fewer round trips). The
-- builder collapses the merged rows per key as it does within any batch. The
-- pending batch is applied before the watermark in flush() (so a sink
-- transaction still ends on a source commit boundary), and before a batch of
-- another table (order across tables is kept). A batch of batchSize rows or
-- more is applied as it comes.
local MERGE_MAX_BYTES = 16 * 1024 * 1024

local function col_sig(cols)
  local parts = {}
  for i, c in ipairs(cols) do parts[i] = c.name .. "\0" .. c.class end
  return table.concat(parts, "\1")
end

-- Takes b's rows into the pending batch (true), or returns false: apply b now.
function Runner:merge(t, b, n)
  local p = self.pending
  if p and (n >= self.merge_rows or self.pending_t ~= t or self.pending_sig ~= col_sig(b:columns())) then
    self:apply_pending()
    p = nil
  end
  if n >= self.merge_rows then return false end
  if not p then
    local cols = b:columns()
    p = batchlib.new(cols)
    self.pending, self.pending_t, self.pending_sig = p, t, col_sig(cols)
  end
  if p.append then p:append(b) -- native copy, when the batch module has one
  else for i = 1, n do p:add(b:get(i)) end end
  if p:count() >= self.merge_rows or p:bytes() >= MERGE_MAX_BYTES then self:apply_pending() end
  return true
end

-- The result of the sink's pipelined statement (sink.inflight_t, see
-- sink/mysql.lua), charged to its own table.
function Runner:reap_sink()
  local t = self.sink.inflight_t
  if not t then return end
  local ok, e = pcall(self.sink.reap, self.sink)
  if not ok then self:table_failed(t, e) end
end

function Runner:apply_pending()
  local p, t = self.pending, self.pending_t
  if not p then return end
  self.pending, self.pending_t, self.pending_sig = nil, nil, nil
  self:reap_sink()
  local ok, e = pcall(self.sink.apply_changes, self.sink, t, p)
  p:free()
  if not ok then self:table_failed(t, e) end
end

function Runner:transform_batch(t, b)
  -- the output has the columns the transforms leave (drop / rename), as the sink table
  local out = batchlib.new(stream.output_columns(self.job.stream.transforms, b:columns()))
  local fn = self.transform
  for i = 1, b:count() do
    local op, before, after = b:get_named(i)
    local ok, nb, na = true, before, after
    local okf, res = pcall(function()
      if before then nb = fn(before) end
      if after then na = fn(after) end
    end)
    if not okf then
      local e = type(res) == "table" and res or { msg = tostring(res) }
      errors.raise(string.format("transform %s at %s failed on %s %s: %s", e.transform or "?", e.where or "?",
        t.src_label, op, e.msg))
    end
    -- a row the transforms drop (nil) is not in the sink: an update moving a
    -- row out of what they keep deletes it there, one moving it in inserts it
    local keep_b, keep_a = before == nil or nb ~= nil, after == nil or na ~= nil
    local out_op = op
    if op == "update" and keep_b ~= keep_a then
      if keep_b then out_op, na = "delete", nil else out_op, nb = "insert", nil end
    elseif not (keep_b and keep_a) then
      ok = false
    end
    if ok then
      local _, ob, oa = b:get_named(i) -- the transform may have changed before/after in place
      copy.add_transformed(out, out_op, nb, na, t, op, oa or ob)
    end
  end
  return out
end

-- Commit the open sink transaction together with the watermark at `pos`.
function Runner:flush(pos)
  if not self.in_txn then return end
  assert(not self.mid_txn, "internal: flush inside a source transaction")
  self:apply_pending()
  self:reap_sink()
  local sink = self.sink
  for _, t in ipairs(self.tables) do
    if not t.failed then
      t.pos = position.max(t.pos, pos)
      sink:set_watermark(t.src_label, t.dst_db .. "." .. t.dst_table, "cdc", nil, t.pos)
    end
  end
  sink:commit()
  self.in_txn = false
  self.last_wm_time = util.mono()
  self.store:set("position", require("cjson").encode(pos))
  if self.ctx.on_checkpoint then self.ctx.on_checkpoint(self.tables, pos) end
end

-- Advance the watermark without data (idle source / unrelated traffic).
function Runner:advance_idle(pos, force)
  if self.in_txn or not pos then return end
  local now = util.mono()
  if not force and self.last_wm_time and now - self.last_wm_time < self.idle_interval then return end
  local moved = false
  for _, t in ipairs(self.tables) do
    if position.compare(pos, t.pos) > 0 then moved = true end
  end
  if not moved and not force then self.last_wm_time = now return end
  self.sink:begin()
  self.in_txn = true
  self:flush(pos)
end

function Runner:handle_ddl(ev, cur)
  local targets = M.ddl_targets(ev.sql or "", ev.db)
  local hit = {}
  for _, x in ipairs(targets) do
    if x.table and x.db and self:selected(x.db, x.table) then hit[#hit + 1] = x end
  end
  if #hit == 0 then return false end
  if self.in_txn then self:flush(self.last_commit) end
  local first = hit[1]
  local where = string.format("%s:%d", cur.file, ev.pos or cur.pos)
  if not self.merge_schema then
    errors.raise(string.format("source DDL on %s.%s at %s (\"%s\"): schema changes stop the pipeline; " ..
      "set mergeSchema = \"true\" in save.append options to apply them to the sink, or re-run with a full copy",
      first.db, first.table, where, (ev.sql or ""):gsub("%s+", " "):sub(1, 200)))
  end
  for _, x in ipairs(hit) do
    if x.verb == "RENAME" then
      errors.raise(string.format("source DDL RENAME TABLE %s.%s at %s: renaming a synced table is not supported; " ..
        "re-run the pipeline with the new name and a full copy", x.db, x.table, where))
    end
  end
  for _, x in ipairs(hit) do
    local t = self.by_name[x.db .. "\0" .. x.table]
    if self.sink:apply_ddl(t, x, ev) then
      -- a generated column added or changed: never written from now on
      local _, gen, set = schema.split_generated(schema.columns(self.src.c, t.src_db, t.src_table))
      t.generated, t.generated_set = gen, set
    end
  end
  return true
end

function Runner:stream_loop()
  local o, src = self.o, self.src
  local start
  for _, t in ipairs(self.tables) do
    if not t.failed then start = start and position.min(start, t.pos) or t.pos end
  end
  local target = self.run_opts.once and M.master_status(src.c) or nil
  local function caught_up(pos)
    return target and position.compare(pos, target) >= 0
  end
  if caught_up(start) then
    log.info("sink is already at %s (source at %s): nothing to do", position.format(start), position.format(target))
    return self:summary()
  end
  self.idle_interval = tonumber(o.heartbeatInterval) or 1
  self.in_src_txn = false -- between a transaction's GTID/BEGIN and its end (any table)
  if self.pending then self.pending:free() self.pending = nil end -- rolled back with the sink transaction
  self.merge_rows = self.sink.merges_batches and (tonumber(o.batchSize) or 5000) or nil
  self.sink.pipelined = self.sink.can_pipeline ~= nil and self.sink:can_pipeline()
  local max_txn_rows = tonumber(o.maxTxnRows) or 50000
  -- duration (MLSQL) / flushInterval: longest time a sink transaction stays open while busy
  local flush_interval = tonumber(self.job.opts.flushInterval or self.job.opts.duration) or 0.2
  local server_id = tonumber(o.serverId) or (1000000 + (util.getpid() % 1000000))
  -- the source's own connection settings (TLS, socket, timeouts, charset: the one C opener)
  local p = assert(require("mocdc.conn").settings(src.uri, { password = o.password,
    read_timeout = o.readTimeout, connect_timeout = o.connectTimeout }))
  p.server_id, p.file, p.heartbeat = server_id, start.file, tonumber(o.heartbeat) or 1
  p.pos = start.file and start.pos or nil
  p.gtid = (not start.file) and start.gtid or nil
  local h, err, code = binlog.open(p)
  if not h then
    if code == 1236 then
      errors.raise(string.format("binlog %s needed to resume is no longer on source %s (purged): %s; %s",
        position.format(start), src.c.label, err, M.FULL_COPY_HINT))
    end
    errors.open_failed(string.format("cannot read the binlog of source %s: %s", src.c.label, err), code)
  end
  self.stream_h = h
  log.info("streaming binlog from %s (server_id %d)", position.format(start), server_id)
  local cur = position.copy(start)
  local txn_start = position.copy(start)
  local gtid
  local stop_after_commit = false
  while true do
    local stop = util.stop_requested() or (self.ctx.should_stop and self.ctx.should_stop())
    if stop then
      -- safe point: only whole source transactions are ever committed
      if self.in_txn and self.last_commit and not self.mid_txn then self:flush(self.last_commit) end
      self.sink:rollback()
      self.in_txn = false
      log.info("stopped at %s", position.format(self.last_commit or cur))
      break
    end
    local ev, eerr, ecode = h:next(5000)
    if not ev then
      if eerr then
        if ecode == 1236 then
          errors.raise(string.format("binlog stream from source %s failed: %s; the binlog needed was purged or " ..
            "is missing — re-run with a full copy", src.c.label, eerr))
        end
        errors.raise_sql(string.format("binlog stream from source %s failed: %s", src.c.label, eerr), ecode)
      end
      break
    end
    local et = ev.type
    if et == "table" then
      h:want(ev.db, ev.table, self:selected(ev.db, ev.table))
    elseif et == "need_schema" then
      -- the source does not log column names (binlog_row_metadata is not FULL):
      -- use the table's current definition (exact unless its DDL changed since)
      local cols, serr, serrno = binlog.schema_columns(src.c, ev.db, ev.table)
      if not cols then
        errors.raise_sql(string.format("cannot read the columns of %s.%s on source %s: %s (set binlog_row_metadata=FULL " ..
          "on the source to make the binlog self-describing)", ev.db, ev.table, src.c.label, tostring(serr)), serrno)
      end
      h:set_schema(ev.db, ev.table, cols)
    elseif et == "statement" then
      if not (self.start_ts and ev.ts and ev.ts < self.start_ts) then self:statement(ev, cur, txn_start) end
      if ev.pos then cur.pos = ev.pos end
    elseif et == "rollback" then
      self.in_src_txn = false
      if self.mid_txn then
        errors.raise(string.format("source %s logged a ROLLBACK after row changes at %s:%s (non-transactional tables?); " ..
          "restart the pipeline to replay from the last checkpoint", src.c.label, cur.file, tostring(ev.pos)))
      end
      if ev.pos then cur.pos = ev.pos end
    elseif et == "gtid" or et == "begin" then
      txn_start = position.copy(cur)
      self.in_src_txn = true
      if et == "gtid" then gtid = ev.gtid end
      if ev.pos then cur.pos = ev.pos end
      self.txn_skip = false
    elseif et == "rows" then
      local t = self.by_name[ev.db .. "\0" .. ev.table]
      if self.start_ts and ev.ts and ev.ts < self.start_ts then
        -- before startTs: not applied
      elseif self.end_ts and ev.ts and ev.ts > self.end_ts then
        stop_after_commit = true
        self.txn_skip = true
      elseif t and not self.txn_skip and position.compare(txn_start, t.pos) >= 0 then
        self.cur_ev = ev
        self:apply(t, ev.batch)
      end
      ev.batch:free() -- native memory: release now rather than at the next GC cycle
      if ev.pos then cur.pos = ev.pos end
    elseif et == "commit" then
      cur = { file = ev.file or cur.file, pos = ev.pos or cur.pos, gtid = gtid, ts = ev.ts }
      self.last_commit = position.copy(cur)
      self.mid_txn, self.in_src_txn = false, false
      if stop_after_commit then
        if self.in_txn then self:flush(self.last_commit) end
        log.info("reached endTs %s at %s", tostring(o.endTs), position.format(cur))
        break
      end
      if self.in_txn then
        local idle = h.readable and not h:readable(0)
        if self.txn_rows >= max_txn_rows or idle or util.mono() - self.txn_started >= flush_interval then
          self:flush(self.last_commit)
        end
      else
        self:advance_idle(self.last_commit)
      end
      if caught_up(cur) and not self.in_txn then break end
    elseif et == "ddl" then
      self.in_src_txn = false
      if ev.pos then cur.pos = ev.pos end
      cur.gtid = gtid -- the DDL's own (positions carry the last GTID before them)
      local txn_ok = true
      for _, x in ipairs(M.ddl_targets(ev.sql or "", ev.db)) do
        local tt = x.db and x.table and self.by_name[x.db .. "\0" .. x.table]
        if tt and position.compare(txn_start, tt.pos) < 0 then txn_ok = false end
      end
      -- DDL before startTs is history outside the requested window (tasks started with --start-ts)
      if self.start_ts and ev.ts and ev.ts > 0 and ev.ts < self.start_ts then txn_ok = false end
      txn_start = position.copy(cur)
      if txn_ok and self:handle_ddl(ev, cur) then
        self.last_commit = position.copy(cur)
        self:advance_idle(self.last_commit, true)
      else
        self.last_commit = position.copy(cur)
      end
      if caught_up(cur) and not self.in_txn then break end
    elseif et == "rotate" then
      cur = { file = ev.file, pos = ev.pos or 4 }
      txn_start = position.copy(cur)
    elseif et == "heartbeat" then
      if self.in_txn and self.last_commit and not self.mid_txn then self:flush(self.last_commit) end
      if not self.in_src_txn and ev.file and ev.pos and ev.pos > 0 then
        -- the source sends a heartbeat once it has sent everything before (file, pos): outside a
        -- transaction the stream is in sync there, even when no transaction came (a new binlog file)
        local hb = { file = ev.file, pos = ev.pos, gtid = self.last_commit and self.last_commit.gtid or gtid }
        if position.compare(hb, cur) > 0 then cur = hb end
        if position.compare(hb, self.last_commit) > 0 then self.last_commit = position.copy(hb) end
      end
      self:advance_idle(self.last_commit)
      -- idle source, nothing pending: every table is in sync as of now
      if not self.in_txn and self.ctx.on_checkpoint then self.ctx.on_checkpoint(self.tables, self.last_commit) end
      if caught_up(cur) and not self.in_txn then break end
      -- an idle source past endTs: nothing inside the window can still arrive
      if self.end_ts and not self.in_txn and util.now() > self.end_ts + 1 then
        log.info("reached endTs %s (source idle past it) at %s", tostring(o.endTs), position.format(cur))
        break
      end
    end
  end
  if self.in_txn and self.last_commit and not self.mid_txn then self:flush(self.last_commit) end
  return self:summary()
end

function Runner:summary()
  local out = {}
  for _, t in ipairs(self.tables) do
    out[#out + 1] = { src = t.src_label, dst = t.dst_db .. "." .. t.dst_table, rows = t.applied or 0,
      seconds = 0, cdc = true, position = t.pos }
  end
  return out
end

return M
