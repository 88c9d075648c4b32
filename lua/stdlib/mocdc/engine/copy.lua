-- Full copy: snapshot source -> sink, table by table, in chunks. Each chunk is
-- one sink transaction that also writes the table's watermark (last key
-- copied), so a restart resumes after the last committed chunk and never
-- copies a row twice or skips one. Without transforms the rows never leave C
-- (LOAD DATA LOCAL INFILE fed straight from the source cursor); with
-- transforms they pass through Lua in batches.
local batchlib = require("mocdc.batch")
local errors = require("mocdc.errors")
local log = require("mocdc.log")
local progress = require("mocdc.progress")
local schema = require("mocdc.schema")
local cjson = require("cjson")
local options = require("mocdc.pipeline.options")
local stream = require("mocdc.pipeline.stream")
local util = require("mocdc.util.lib")

local M = {}

function M.key_text(t, row)
  local parts = {}
  for _, i in ipairs(t.key_idx) do
    local v = row[t.columns[i].name]
    local s = v == nil and "NULL" or tostring(v)
    if #s > 64 then s = s:sub(1, 61) .. "..." end
    parts[#parts + 1] = t.columns[i].name .. "=" .. s
  end
  return #parts > 0 and ("(" .. table.concat(parts, ", ") .. ")") or "(no key)"
end
local key_text = M.key_text

-- Add a change a transform produced to `out`; a value the batch refuses (a
-- table, a boolean) is one line naming the source table, the change (`what`:
-- row / insert / update / delete), its source key (`orig`, the row before the
-- transform) and the column.
function M.add_transformed(out, op, before, after, t, what, orig)
  local ok, err = pcall(out.add_named, out, op, before, after)
  if not ok then
    errors.raise(string.format("transform output for %s %s %s does not fit sink table %s.%s: %s; " ..
      "a transform must set columns to strings, numbers or nil", t.src_label, what, key_text(t, orig), t.dst_db,
      t.dst_table, tostring(err)))
  end
end

-- The per-row transform path (the full copy, the MatrixOne diff): row i of
-- batch `inb` (its after image; a delete's before image) through the compiled
-- transforms `fn`. Returns the sink row (nil: the transforms drop it) and the
-- row's op. A failing transform is one line naming the source table, the
-- change (`what`, default the op) and the row's source key.
function M.transform_row(fn, t, inb, i, what)
  local op, before, after = inb:get_named(i)
  local okf, res = pcall(fn, after or before)
  if okf then return res, op end
  local e = type(res) == "table" and res or { msg = tostring(res) }
  local _, b0, a0 = inb:get_named(i) -- the transform may have changed the row in place
  errors.raise(string.format("transform %s at %s failed on %s %s %s: %s", e.transform or "?", e.where or "?",
    t.src_label, what or op, key_text(t, a0 or b0), e.msg))
end

-- Key values are arbitrary bytes (a VARBINARY key need not be UTF-8): the
-- watermark stores them hex-encoded, {hex = {"0a1b", ...}}.
function M.encode_key(key)
  if not key then return nil end
  local hex = {}
  for i, v in ipairs(key) do hex[i] = util.hex(tostring(v)) end
  return { hex = hex }
end

function M.decode_key(k)
  if type(k) ~= "table" or type(k.hex) ~= "table" then return nil end
  local out = {}
  for i, h in ipairs(k.hex) do
    out[i] = util.unhex(h)
    if not out[i] then return nil end
  end
  return out
end

-- Decide the columns written to the sink and check the sink table.
function M.prepare(t, sink, transforms, skip_compare)
  local out_cols = stream.output_columns(transforms, t.columns)
  local renamed = #out_cols ~= #t.columns
  for i, c in ipairs(out_cols) do if c.name ~= t.columns[i].name then renamed = true end end
  t.out_columns = out_cols
  local create_sql = t.create_sql
  if renamed then
    -- rename/drop changed the column list: build the DDL from column definitions
    local defs, keys = {}, {}
    for _, c in ipairs(out_cols) do
      defs[#defs + 1] = "  " .. schema.qi(c.name) .. " " .. c.column_type .. (c.nullable and " NULL" or " NOT NULL")
    end
    t.dst_key = {}
    for _, ki in ipairs(t.key_idx) do
      local name = t.columns[ki].name
      for _, tr in ipairs(transforms) do
        if tr.kind == "rename" and tr.map[name] then name = tr.map[name] end
        if tr.kind == "drop" and tr.set[name] then
          errors.raise(string.format("transform at %s drops key column '%s' of %s; keep key columns", tr.where, name, t.src_label), 2)
        end
      end
      t.dst_key[#t.dst_key + 1] = name
      keys[#keys + 1] = schema.qi(name)
    end
    if #keys > 0 then defs[#defs + 1] = "  PRIMARY KEY (" .. table.concat(keys, ", ") .. ")" end
    create_sql = "CREATE TABLE `x` (\n" .. table.concat(defs, ",\n") .. "\n)"
  end
  if t.key_from_idcols and create_sql and not renamed then
    -- idCols drive upserts: a sink table created for a keyless source table gets
    -- that key, so REPLACE replaces instead of adding a row
    local keys = {}
    for _, k in ipairs(t.key) do keys[#keys + 1] = schema.qi(k) end
    create_sql = create_sql:gsub("\n%)([^\n]*)$", ",\n  PRIMARY KEY (" .. table.concat(keys, ", ") .. ")\n)%1", 1)
  end
  sink:prepare_table({ src_label = t.src_label, dst_db = t.dst_db, dst_table = t.dst_table,
    columns = out_cols, generated = t.generated, create_sql = create_sql }, #transforms > 0, skip_compare)
  if t.key_from_idcols and sink.c then -- a SQL sink (sink.c is its connection)
    local have = schema.primary_key(sink.c, t.dst_db, t.dst_table)
    local want, got = {}, {}
    for _, k in ipairs(t.dst_key or t.key) do want[#want + 1] = k:lower() end
    for _, k in ipairs(have) do got[#got + 1] = k:lower() end
    table.sort(want) table.sort(got)
    if table.concat(want, ",") ~= table.concat(got, ",") then
      errors.raise(string.format("sink table %s.%s has no primary or unique NOT NULL key on idCols (%s): " ..
        "add one (ALTER TABLE ... ADD PRIMARY KEY (%s)) so upserts replace rows instead of duplicating them",
        t.dst_db, t.dst_table, table.concat(t.key, ", "), table.concat(t.key, ", ")), 2)
    end
  end
  t.dst_key_idx = {}
  for j, ki in ipairs(t.key_idx) do
    local name = (t.dst_key and t.dst_key[j]) or t.columns[ki].name
    for i, c in ipairs(out_cols) do if c.name == name then t.dst_key_idx[#t.dst_key_idx + 1] = i end end
  end
end

-- The context copy_table needs: chunkSize (rows per sink transaction of the
-- LOAD DATA path) and batchSize (rows per batch on the SQL path) come from
-- the source options; `extra` adds position / final_phase.
function M.context(src, sink, store, transforms, so, extra)
  local ctx = { src = src, sink = sink, store = store, transforms = transforms,
    chunk_rows = options.number(so, "chunkSize", 100000), batch_rows = options.number(so, "batchSize", 5000) }
  for k, v in pairs(extra or {}) do ctx[k] = v end
  return ctx
end

-- Copy one table. ctx: see M.context
function M.copy_table(ctx, t)
  local src, sink, store = ctx.src, ctx.sink, ctx.store
  local dst_label = t.dst_db .. "." .. t.dst_table
  local wm = sink:read_watermark(t.src_label, dst_label)
  if wm and wm.phase ~= "full" then
    log.info("%s -> %s: already copied (watermark phase %s), skipping", t.src_label, dst_label, wm.phase)
    return 0, 0, true
  end
  local resume = wm and M.decode_key(wm.full_key)
  if resume and #t.key_idx == 0 then resume = nil end
  -- A copy resumed by key keeps the binlog position of the snapshot it started with: replaying the
  -- changes since then over rows read from this newer snapshot converges by key. A copy started
  -- clean (no key, or nothing committed yet) reads everything from this snapshot, so it streams from
  -- this snapshot's position: the older one would apply the changes in between twice (a keyless
  -- table would gain their rows again).
  if resume and ctx.resume_position then ctx.position = ctx.resume_position end
  if resume then log.info("%s -> %s: resuming full copy after key %s", t.src_label, dst_label, table.concat(wm.full_key.hex or resume, ","))
  elseif #t.key_idx == 0 then
    -- no key: a partial earlier attempt cannot be resumed by key; start clean
    sink:clear_table(t)
  end
  local cursor = src:cursor(t, resume)
  local prog = progress.new(t.src_label .. " -> " .. dst_label, t.estimated_rows)
  local total, bytes_total = 0, 0
  local fn = stream.compile(ctx.transforms)
  local final_phase = ctx.final_phase or "done"
  local function commit_chunk(last_key)
    last_key = M.encode_key(last_key)
    sink:set_watermark(t.src_label, dst_label, "full", last_key, ctx.position)
    sink:commit()
    store:set("table/" .. t.src_label, cjson.encode({ phase = "full", full_key = last_key }))
  end
  local ok, err = pcall(function()
    if not fn and sink.use_load_data then
      while true do
        if util.stop_requested() then errors.raise("interrupted; the copy resumes from the last committed chunk", 130) end
        sink:begin()
        local n, bytes, last_key = sink:load_chunk(cursor, t, ctx.chunk_rows)
        if n == 0 then sink:rollback() break end
        commit_chunk(#t.key_idx > 0 and last_key or nil)
        total, bytes_total = total + n, bytes_total + (bytes or 0)
        prog:add(n)
      end
    else
      local inb = batchlib.new(t.columns)
      local outb = fn and batchlib.new(t.out_columns) or inb
      while true do
        if util.stop_requested() then errors.raise("interrupted; the copy resumes from the last committed chunk", 130) end
        inb:clear()
        if outb ~= inb then outb:clear() end
        local n, ferr, fcode, fstate = cursor:fetch(inb, ctx.batch_rows)
        if not n then errors.raise_sql(string.format("reading %s from source failed: %s", t.src_label, ferr), fcode, fstate) end
        if n == 0 then break end
        if fn then
          for i = 1, n do
            local res = M.transform_row(fn, t, inb, i, "row")
            if res ~= nil then
              local _, _, orig = inb:get_named(i)
              M.add_transformed(outb, "insert", nil, res, t, "row", orig)
            end
          end
        end
        local last_key
        if #t.key_idx > 0 then
          local _, _, last = inb:get(n)
          last_key = {}
          for j, ki in ipairs(t.key_idx) do last_key[j] = last[ki] end
        end
        sink:begin()
        if outb:count() > 0 then sink:apply_batch(outb, t, "replace") end
        commit_chunk(last_key)
        total, bytes_total = total + n, bytes_total + inb:bytes()
        prog:add(n)
      end
    end
  end)
  cursor:close()
  local _, elapsed = prog:finish()
  if not ok then
    sink:rollback()
    error(err, 0)
  end
  -- mark the table copied (the position lets a binlog source continue from the snapshot)
  sink:begin()
  sink:set_watermark(t.src_label, dst_label, final_phase, nil, ctx.position)
  sink:commit()
  store:set("table/" .. t.src_label, cjson.encode({ phase = final_phase, position = ctx.position }))
  return total, elapsed, false
end

return M
