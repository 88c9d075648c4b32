-- The snapshot-diff engine's chunk checksums and row merge: ranges of a
-- table's keys summed on the source, the sink or a time-travel read (on
-- several source connections at once), sampled into chunk boundaries, bisected
-- while they differ and, once small, fetched from both sides and merged by key
-- in C (mocdc.rowdiff) into inserts / updates / deletes. The Engine methods
-- are installed by engine/snapdiff.lua; the SQL is engine/snapdiff_sql.lua.
local batchlib = require("mocdc.batch")
local diff = require("mocdc.engine.snapdiff_sql")
local errors = require("mocdc.errors")
local rowdiff = require("mocdc.rowdiff")
local schema = require("mocdc.schema")
local util = require("mocdc.util.lib")

local M = {}
local Engine = {}
M.methods = Engine

-- Key ranges are evaluated by both servers: string keys must sort alike.
function Engine:check_collations(t)
  local function coll(c, db, tbl, col)
    local rows = c:query("SELECT collation_name FROM information_schema.columns WHERE table_schema = '" ..
      c:escape(db) .. "' AND table_name = '" .. c:escape(tbl) .. "' AND column_name = '" .. c:escape(col) .. "'")
    return rows and rows[1] and rows[1][1]
  end
  for j, kc in ipairs(t.keycols) do
    if kc.class == "str" then
      local a = coll(self.src.c, t.src_db, t.src_table, kc.name)
      local b = coll(self.sink.c, t.dst_db, t.dst_table, t.dst_keycols[j].name)
      if type(a) == "string" and type(b) == "string" and a ~= b then
        errors.raise(string.format("key column '%s' has collation %s in %s but %s in sink table %s; snapshot " ..
          "diffing compares key ranges on both servers: give the sink column the same collation", kc.name, a,
          t.src_label, b, t.dst_label), 2)
      end
    end
  end
end

-- The rows of a query, or raise naming what failed on which server.
function M.q(c, sql, what)
  local rows, err, code, sqlstate = c:query(sql)
  if not rows then
    errors.raise_sql(string.format("%s on %s failed: %s", what, c.label or "server", tostring(err)), code, sqlstate)
  end
  return rows
end

-- The connection, table reference, columns and key columns of a side: the
-- source ("src"), its time-travel read of the previous state ("old") or the
-- sink ("sink").
function Engine:side(side, t)
  if side == "src" then return self.src.c, t.src_ref, t.columns, t.keycols end
  if side == "old" then return self.src.c, t.old_ref, t.columns, t.keycols end
  return self.sink.c, t.dst_ref, t.out_columns, t.dst_keycols
end

-- Sums of ranges on a side; array of {n=, s=}.
function Engine:sums(side, t, ranges, st)
  if #ranges == 0 then return {} end
  local c, ref, cols, keys = self:side(side, t)
  local out = {}
  local conns = { c }
  if side == "src" then
    for _, h in ipairs(self.src.helpers_active or {}) do conns[#conns + 1] = h end
  end
  local t0 = util.mono()
  -- statements of at most 100 ranges, as many per connection (balanced waves)
  if side == "src" then st.conns = math.max(st.conns, #conns) end
  local nstmt = #conns * math.ceil(#ranges / (100 * #conns))
  local per = math.max(1, math.ceil(#ranges / nstmt))
  M.run_all(conns, diff.sums_sql(ref, cols, keys, ranges, { mode = self.mode, per_statement = per }),
    "checksumming " .. t.src_label,
    function(rows)
      for _, r in ipairs(rows) do
        out[tonumber(r[1])] = diff.sum_of(r, 2)
        st.summary_bytes = st.summary_bytes + #tostring(r[3]) + 16
      end
    end)
  st.sum_queries = st.sum_queries + #ranges
  st.t_sums = st.t_sums + (util.mono() - t0)
  return out
end

-- Run read-only statements on several connections at once (send, then
-- reap_query: no threads), handing each result to on_rows in any order.
-- An error is raised once every statement sent has been reaped, so the
-- connections stay usable.
function M.run_all(conns, stmts, what, on_rows)
  if #conns == 1 or #stmts == 1 then
    for _, sql in ipairs(stmts) do on_rows(M.q(conns[1], sql, what)) end
    return
  end
  local i = 1
  while i <= #stmts do
    local wave, failed = {}, nil
    for _, c in ipairs(conns) do
      if i > #stmts then break end
      local ok, err, code = c:send(stmts[i])
      if ok then wave[#wave + 1] = c else failed = failed or { c, err, code } end
      i = i + 1
    end
    local raised
    for _, c in ipairs(wave) do
      local rows, err, code = c:reap_query()
      if rows then
        if not failed and not raised then
          local ok, e = pcall(on_rows, rows)
          if not ok then raised = e end
        end
      else
        failed = failed or { c, err, code }
      end
    end
    if failed then
      errors.raise_sql(string.format("%s on %s failed: %s", what, failed[1].label or "server", tostring(failed[2])), failed[3])
    end
    if raised then error(raised, 0) end
  end
end

-- Boundary keys every `step` rows of a source range.
function Engine:sample(t, lo, hi, step, st)
  local rows = M.q(self.src.c, diff.sample_sql(t.src_ref, t.keycols, lo, hi, math.max(1, math.floor(step))),
    "sampling chunk boundaries of " .. t.src_label)
  st.summary_bytes = st.summary_bytes + #rows * 16
  local out = {}
  for i, r in ipairs(rows) do
    local k = {}
    for j = 1, #t.keycols do k[j] = r[j] end
    out[i] = k
  end
  return out
end

-- The rows of `sql` on c streamed into a new batch of `cols`; a failure
-- raises "<what> from <server> failed: ..." with its errno and sqlstate.
function M.drain(c, sql, cols, what)
  local cur, err, code, sqlstate = c:stream(sql)
  if not cur then
    errors.raise_sql(string.format("%s from %s failed: %s", what, c.label, tostring(err)), code, sqlstate)
  end
  local b = batchlib.new(cols)
  while true do
    local n, ferr, fcode, fstate = cur:fetch(b, 100000)
    if not n then
      cur:close()
      b:free()
      errors.raise_sql(string.format("%s from %s failed: %s", what, c.label, tostring(ferr)), fcode, fstate)
    end
    if n == 0 then break end
  end
  cur:close()
  return b
end

-- Rows of a side into a new batch: the statement sqlf(ref, cols, keys, ...).
function Engine:read(side, t, st, sqlf, ...)
  local c, ref, cols, keys = self:side(side, t)
  if side == "sink" then self.sink:reap() end
  local b = M.drain(c, sqlf(ref, cols, keys, ...), cols, "reading " .. (side == "sink" and t.dst_label or t.src_label))
  st.rows_fetched = st.rows_fetched + b:count()
  st.bytes_fetched = st.bytes_fetched + b:bytes()
  return b
end

-- Rows of a range into a new batch.
function Engine:fetch(side, t, lo, hi, st)
  return self:read(side, t, st, diff.select_sql, lo, hi)
end

-- Transform source rows into sink rows (only with transforms).
function Engine:transform(t, b)
  local out = batchlib.new(t.out_columns)
  for i = 1, b:count() do
    local _, _, row = b:get_named(i)
    local ok, res = pcall(self.fn, row)
    if not ok then
      local e = type(res) == "table" and res or { msg = tostring(res) }
      errors.raise(string.format("transform %s at %s failed on %s: %s", e.transform or "?", e.where or "?",
        t.src_label, e.msg))
    end
    if res ~= nil then out:add_named("insert", nil, res) end
  end
  b:free()
  return out
end

-- Merge one range: previous state vs current source rows -> out.
function Engine:merge_range(t, lo, hi, out, st)
  local t0 = util.mono()
  local cur = self:fetch("src", t, lo, hi, st)
  local old
  if t.old_ref then
    old = self:fetch("old", t, lo, hi, st)
  else
    old = self:fetch("sink", t, lo, hi, st)
  end
  if self.fn then
    cur = self:transform(t, cur)
    if t.old_ref then old = self:transform(t, old) end
  end
  local key = (#t.keycols > 0) and (t.dst_key_idx or t.key_idx) or {}
  local i, u, d = rowdiff.rows(old, cur, key, out)
  st.inserts, st.updates, st.deletes = st.inserts + i, st.updates + u, st.deletes + d
  old:free()
  cur:free()
  st.t_merge = st.t_merge + (util.mono() - t0)
end

-- A changed range holding `n` current rows: bisect while it is big.
-- tick() runs after each merged range (it may commit a piece).
function Engine:process_range(t, lo, hi, n, out, st, depth, tick)
  if #t.keycols > 0 and n > self.leaf_rows and depth < 8 then
    local bounds = self:sample(t, lo, hi, math.ceil(n / 16), st)
    if #bounds > 0 then
      local subs = {}
      local prev = lo
      for _, b in ipairs(bounds) do
        subs[#subs + 1] = { lo = prev, hi = b }
        prev = b
      end
      subs[#subs + 1] = { lo = prev, hi = hi }
      local a = self:sums("src", t, subs, st)
      local b
      if t.old_ref then b = self:sums("old", t, subs, st)
      elseif t.same_shape then b = self:sums("sink", t, subs, st) end
      st.bisections = st.bisections + 1
      for i, r in ipairs(subs) do
        if not b or a[i].n ~= b[i].n or a[i].s ~= b[i].s then
          self:process_range(t, r.lo, r.hi, a[i].n, out, st, depth + 1, tick)
        end
      end
      return
    end
  end
  self:merge_range(t, lo, hi, out, st)
  if tick then tick() end
end

-- The table's CHECKSUM TABLE in the snapshot, or nil (gate off, MatrixOne,
-- time travel). With gate = "auto" (default) it is skipped after an
-- iteration that found changes (`state.busy`): a table that changes all the
-- time would pay it on top of the chunk sums at every iteration.
function Engine:gate(t, state)
  if self.gate_mode == false then return nil end
  if self.gate_mode == "auto" and state and state.busy then return nil end
  local c = self.src.c
  if c.flavour == "matrixone" or t.old_ref then return nil end
  local rows = c:query("CHECKSUM TABLE " .. schema.qname(t.src_db, t.src_table))
  local v = rows and rows[1] and rows[1][2]
  if type(v) ~= "string" then return nil end
  return v
end

-- Sum a chunk list of the current source (all chunks summed).
function Engine:sum_list(t, chunks, st)
  local sums = self:sums("src", t, diff.ranges(chunks), st)
  local out = {}
  for i, c in ipairs(chunks) do out[i] = { lo = c.lo, n = sums[i].n, s = sums[i].s } end
  return out
end

-- A fresh object list of the current source.
function Engine:baseline(t, st)
  local bounds = {}
  if #t.keycols > 0 then bounds = self:sample(t, nil, nil, self.chunk_rows, st) end
  return self:sum_list(t, diff.from_bounds(bounds), st)
end

-- Split function for rebalance: sample inside the chunk, sum the parts.
function Engine:splitter(t, list, st)
  return function(i, c)
    if #t.keycols == 0 then return { c } end
    local hi = list[i + 1] and list[i + 1].lo or nil
    local bounds = self:sample(t, c.lo, hi, self.chunk_rows, st)
    if #bounds == 0 then return { c } end
    local parts = { { lo = c.lo } }
    for _, b in ipairs(bounds) do parts[#parts + 1] = { lo = b } end
    local ranges = {}
    for k, p in ipairs(parts) do ranges[k] = { lo = p.lo, hi = parts[k + 1] and parts[k + 1].lo or hi } end
    local sums = self:sums("src", t, ranges, st)
    for k, p in ipairs(parts) do p.n, p.s = sums[k].n, sums[k].s end
    return parts
  end
end

return M
