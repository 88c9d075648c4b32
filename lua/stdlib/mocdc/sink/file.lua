-- The file changelog sink (MLSQL's `binlogRate` form):
--   save.append(t, "file:///tmp/binlog1/{db}/{table}", { idCols = "id", duration = 5,
--               checkpointLocation = "/tmp/cpl-binlog" })
-- Each table gets a directory; changes are appended to <dir>/changes.jsonl,
-- one JSON object per line:
--   {"op":"update","db":"d","table":"t","key":{"id":"4"},"before":{...},"after":{...},
--    "pos":{"file":"mysql-bin.000001","pos":1234},"ts":1730203200}
-- Values are strings in MySQL text form (NULL = null); BINARY/BLOB/BIT values are "0x<hex>".
-- With mergeSchema, source DDL on the table is a record too (see Sink:apply_ddl).
-- Commit = flush + fsync every file, then record the files' lengths and the
-- watermarks in the checkpoint store in one SQLite transaction. On restart,
-- bytes written after the last commit are cut off, so no record is doubled.
local cjson = require("cjson")
local checkpoint = require("mocdc.checkpoint")
local errors = require("mocdc.errors")
local util = require("mocdc.util.lib")

local M = {}
local Sink = {}
Sink.__index = Sink

local function hex(s) return "0x" .. util.hex(s) end

function M.open(target, o)
  local tmpl = target:match("^file://(/.*)$")
  if not tmpl then
    errors.raise(string.format("file sink '%s': expected file:///absolute/path/{db}/{table}", target), 2)
  end
  local jo = o.opts or {}
  local dir = o.state_dir -- the job's checkpointLocation (pipeline/job.lua, state_dir)
  local store, err = checkpoint.open_location(dir .. "/file-sink")
  if not store then errors.raise(string.format("checkpointLocation %s: %s", dir, err), 2) end
  local id_cols
  if jo.idCols then
    id_cols = {}
    for n in tostring(jo.idCols):gmatch("[^,%s]+") do id_cols[#id_cols + 1] = n end
  end
  return setmetatable({ tmpl = tmpl, store = store, files = {}, pending = {}, in_txn = false,
    use_load_data = false, id_cols = id_cols, kind = "file", dialect = "file" }, Sink)
end

function Sink:label() return self.tmpl end
function Sink:ensure_watermark() end

function Sink:path_of(t)
  local p = self.tmpl:gsub("{db}", function() return t.dst_db end):gsub("{table}", function() return t.dst_table end)
  return p
end

-- Open (and repair) the table's changelog file.
function Sink:prepare_table(t)
  local dir = self:path_of(t)
  local ok, err = util.mkdir_p(dir)
  if not ok then errors.raise(string.format("file sink: %s", err)) end
  local path = dir .. "/changes.jsonl"
  local committed = tonumber(self.store:get("size/" .. path) or "0")
  local size = util.exists(path) and util.file_size(path) or 0
  if size > committed then
    -- bytes after the last commit were never acknowledged: cut them off
    assert(util.truncate(path, committed))
  end
  local f, ferr = io.open(path, "ab")
  if not f then errors.raise(string.format("file sink: cannot open %s: %s", path, ferr)) end
  self.files[t.dst_db .. "." .. t.dst_table] = { f = f, path = path, size = committed }
  t.dst_columns = t.columns
end

-- Watermarks per (source table, sink table), like the mysql sink's rows; a
-- "wm/<source>" key of earlier versions counts for the sink table it names.
local function wm_key(source_table, sink_table) return "wm/" .. source_table .. " -> " .. sink_table end

function Sink:read_watermark(source_table, sink_table)
  local v = self.store:get(wm_key(source_table, sink_table))
  if v then return cjson.decode(v) end
  v = self.store:get("wm/" .. source_table)
  local old = v and cjson.decode(v)
  if old and old.sink_table == sink_table then return old end
  return nil
end

function Sink:set_watermark(source_table, sink_table, phase, full_key, pos)
  self.pending[wm_key(source_table, sink_table)] = cjson.encode({ phase = phase, full_key = full_key, position = pos,
    sink_table = sink_table })
end

function Sink:begin()
  self.in_txn = true
end

function Sink:commit()
  local kv = {}
  for _, e in pairs(self.files) do
    if e.dirty then
      local ok, err = util.fsync(e.f)
      if not ok then errors.raise(string.format("file sink: fsync %s failed: %s (disk full?)", e.path, err)) end
      e.size = util.file_size(e.path)
      kv["size/" .. e.path] = tostring(e.size)
      e.dirty = false
    end
  end
  for k, v in pairs(self.pending) do kv[k] = v end
  if next(kv) then
    local ok, err = self.store:set_many(kv)
    if not ok then errors.raise("file sink: saving the checkpoint failed: " .. tostring(err)) end
  end
  self.pending = {}
  self.in_txn = false
end

function Sink:rollback()
  for _, e in pairs(self.files) do
    if e.dirty then
      e.f:flush()
      util.truncate(e.path, e.size)
      e.dirty = false
    end
  end
  self.pending = {}
  self.in_txn = false
end

function Sink:clear_table(t)
  local e = self.files[t.dst_db .. "." .. t.dst_table]
  e.f:flush()
  util.truncate(e.path, 0)
  e.size = 0
  self.store:set("size/" .. e.path, "0")
end

-- generated columns are left out, as in the full copy's records
local function encode_image(img, bincols, generated)
  if not img then return cjson.null end
  local out = {}
  for k, v in pairs(img) do
    if not (generated and generated[k:lower()]) then out[k] = bincols[k] and hex(v) or v end
  end
  return out
end

function Sink:write(t, b, ev)
  local e = self.files[t.dst_db .. "." .. t.dst_table]
  local cols = b:columns()
  local bincols = {}
  for _, c in ipairs(cols) do if c.class == "bin" or c.class == "bit" then bincols[c.name] = true end end
  local keys = self.id_cols or t.key
  local parts = {}
  for i = 1, b:count() do
    local op, before, after = b:get_named(i)
    local img = after or before
    local key = {}
    for _, k in ipairs(keys) do key[k] = img[k] == nil and cjson.null or (bincols[k] and hex(img[k]) or img[k]) end
    parts[#parts + 1] = cjson.encode({ op = op, db = t.src_db, table = t.src_table, key = key,
      before = encode_image(before, bincols, t.generated_set), after = encode_image(after, bincols, t.generated_set),
      pos = ev and { file = ev.file, pos = ev.pos } or cjson.null, ts = ev and ev.ts or cjson.null,
      snapshot = ev == nil or nil })
  end
  parts[#parts + 1] = ""
  local ok, err = e.f:write(table.concat(parts, "\n"))
  if not ok then errors.raise(string.format("file sink: writing %s failed: %s (disk full?)", e.path, err)) end
  e.dirty = true
end

-- Source DDL on table t (mergeSchema): one schema-change record, committed
-- with the watermark that follows it:
--   {"op":"ddl","db":"d","table":"t","verb":"ALTER","sql":"ALTER TABLE d.t ADD ...","pos":{...},"ts":...}
function Sink:apply_ddl(t, x, ev)
  local e = self.files[t.dst_db .. "." .. t.dst_table]
  local rec = cjson.encode({ op = "ddl", db = t.src_db, table = t.src_table, verb = x.verb, sql = ev.sql,
    pos = { file = ev.file, pos = ev.pos }, ts = ev.ts })
  local ok, err = e.f:write(rec, "\n")
  if not ok then errors.raise(string.format("file sink: writing %s failed: %s (disk full?)", e.path, err)) end
  e.dirty = true
  return true
end

function Sink:apply_batch(b, t) self:write(t, b, nil) end
function Sink:apply_changes(t, b, ev) self:write(t, b, ev) end

function Sink:close()
  for _, e in pairs(self.files) do pcall(e.f.close, e.f) end
  self.files = {}
  if self.store then self.store:close() self.store = nil end
end

return M
