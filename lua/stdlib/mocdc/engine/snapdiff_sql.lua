-- mocdc.engine.snapdiff_sql: chunk "object list" diffing (the SQL and the list logic; the
-- engine that runs it is mocdc.engine.snapdiff, the row merge is mocdc.rowdiff).
--
-- A table's object list is an ordered list of primary-key-range chunks:
--   { {lo = nil, n = 1000, s = "9223..."}, {lo = {"1001"}, n = 998, s = "..."}, ... }
-- chunk i holds the keys k with chunks[i].lo <= k < chunks[i+1].lo (the first
-- chunk has no lower bound, the last no upper bound); `n` is its row count and
-- `s` its checksum, computed by the server so only chunk summaries cross the
-- network: by default ("crc") the exact sums of h and h * h over its rows,
-- h = CRC32 of the row's columns (strings by their own CRC32); or ("md5") the
-- sum of a 64-bit slice of MD5(CONCAT_WS('#', columns, lengths, NULL
-- markers)). Never pt-table-checksum's XOR of CRC32: swapping values between
-- rows, or duplicated rows, change it like any other edit (row_hash_sql).
--
--   diff.row_hash_sql(cols, opts)               per-row checksum expression
--   diff.range_sql(keycols, lo, hi)             key range predicate (lo <= k < hi)
--   diff.sums_sql(tbl, cols, keycols, ranges, opts) -> statements (UNION ALL batches)
--   diff.sample_sql(tbl, keycols, lo, hi, step)  boundary keys every `step` rows
--   diff.select_sql(tbl, cols, keycols, lo, hi)  the rows of one range
--   diff.updated_keys_sql(tbl, keycols, col, lo, fsp)  keys updated since lo (updateColumn)
--   diff.counts_sql(tbl, keycols, ranges, per)    row counts of ranges
--   diff.changed(old, new)                      indexes of chunks whose n/s differ
--   diff.rebalance(chunks, target, split_fn)    split big chunks, merge small ones
--   diff.encode_state(state, keycols) / diff.decode_state(text, keycols)
local cjson = require("cjson")
local rowdiff = require("mocdc.rowdiff")
local sqlbuild = require("mocdc.sqlbuild.lib")
local util = require("mocdc.util.lib")

local M = {}

local qi = sqlbuild.quote_ident

-- SQL literal of one key value of column `col` ({class=}).
function M.literal(col, v)
  return sqlbuild.quote_value(col.class, v)
end

-- The text a column contributes to the row checksum. FLOAT's own text form
-- keeps 6 digits (two different floats can print the same): hash its DOUBLE
-- rendering, which round-trips.
local function col_expr(c)
  if c.data_type == "float" then return "CAST(" .. qi(c.name) .. " AS DOUBLE)" end
  return qi(c.name)
end
M.col_expr = col_expr

-- Temporal types print without '#' and are cheap to hash as text.
local TEMPORAL = { date = true, datetime = true, timestamp = true, time = true, year = true }

-- Per-row checksum expression (an unsigned integer).
-- opts.mode:
--   "crc" (default on MariaDB/MySQL): CRC32 of CONCAT_WS('#', numbers and
--     temporals as text, CRC32 of every string/binary column, ISNULL markers
--     of the nullable columns). The chunk summary is COUNT, SUM(h) and
--     SUM(h * h) (sums_sql), so it is not linear in the row hashes the way
--     pt-table-checksum's XOR of CRC32 is: two rows exchanging values, or a
--     duplicated row, change it. About 3x cheaper for the server than "md5".
--   "md5": 64 bits of MD5 through CONV, summed.
--   "md5crc": SUM-friendly 2 x 32 bits (CRC32 of the MD5 and SHA1 hex
--     digests), for servers without CONV, e.g. MatrixOne.
-- Returns an array of expressions (one per checksum component).
function M.row_hash_sql(cols, opts)
  local mode = (opts and opts.mode) or "md5"
  local parts, nulls = {}, {}
  if mode == "crc" then
    for _, c in ipairs(cols) do
      if c.class == "num" or TEMPORAL[c.data_type or ""] then parts[#parts + 1] = col_expr(c)
      else parts[#parts + 1] = "CRC32(" .. qi(c.name) .. ")" end
      if c.nullable ~= false then nulls[#nulls + 1] = "ISNULL(" .. qi(c.name) .. ")" end
    end
    if #nulls > 0 then parts[#parts + 1] = "CONCAT(" .. table.concat(nulls, ", ") .. ")" end
    return { "CRC32(CONCAT_WS('#', " .. table.concat(parts, ", ") .. "))" }
  end
  for _, c in ipairs(cols) do
    local e = col_expr(c)
    parts[#parts + 1] = e
    -- lengths make the concatenation unambiguous ('a#','b' vs 'a','#b')
    if c.class == "str" or c.class == "bin" then parts[#parts + 1] = "LENGTH(" .. qi(c.name) .. ")" end
    nulls[#nulls + 1] = "ISNULL(" .. qi(c.name) .. ")"
  end
  local x = "CONCAT_WS('#', " .. table.concat(parts, ", ") .. ", CONCAT(" .. table.concat(nulls, ", ") .. "))"
  if mode == "md5" then
    return { "CAST(CONV(SUBSTRING(MD5(" .. x .. "), 1, 16), 16, 10) AS UNSIGNED)" }
  elseif mode == "md5crc" then
    return { "CRC32(MD5(" .. x .. "))", "CRC32(SHA1(" .. x .. "))" }
  end
  error("diff.row_hash_sql: unknown checksum mode " .. tostring(mode), 2)
end

-- Key predicate lo <= key < hi (row order), either bound may be nil.
-- keycols: array of columns {name=, class=}; lo/hi arrays of text values.
function M.range_sql(keycols, lo, hi)
  local conds = {}
  local function cmp(bound, strict_op, last_op)
    local n = #keycols
    if n == 1 then
      return qi(keycols[1].name) .. " " .. last_op .. " " .. M.literal(keycols[1], bound[1])
    end
    local ors = {}
    for i = 1, n do
      local ands = {}
      for j = 1, i do
        local op = j < i and "=" or (i == n and last_op or strict_op)
        ands[#ands + 1] = qi(keycols[j].name) .. " " .. op .. " " .. M.literal(keycols[j], bound[j])
      end
      ors[#ors + 1] = "(" .. table.concat(ands, " AND ") .. ")"
    end
    return "(" .. table.concat(ors, " OR ") .. ")"
  end
  if lo then conds[#conds + 1] = cmp(lo, ">", ">=") end
  if hi then conds[#conds + 1] = cmp(hi, "<", "<") end
  if #conds == 0 then return nil end
  return table.concat(conds, " AND ")
end

local function where(keycols, lo, hi)
  local r = M.range_sql(keycols, lo, hi)
  return r and (" WHERE " .. r) or ""
end

-- Statements of up to `per` (default 100) per-range SELECTs one(i, range)
-- joined with UNION ALL.
local function union_batches(ranges, per, one)
  per = per or 100
  local out, cur = {}, {}
  for i, r in ipairs(ranges) do
    cur[#cur + 1] = one(i, r)
    if #cur >= per or i == #ranges then
      out[#out + 1] = table.concat(cur, " UNION ALL ")
      cur = {}
    end
  end
  return out
end

-- Checksum statements for a list of ranges {lo=, hi=} (nil = unbounded):
-- each statement is a UNION ALL of up to opts.per_statement (default 100)
-- range aggregates returning (range index, COUNT(*), SUM(h1)[, SUM(h2)]);
-- every range is one index range scan. tbl: quoted table reference
-- (`db`.`t`, or `db`.`t`{SNAPSHOT = 's'} for MatrixOne time travel).
function M.sums_sql(tbl, cols, keycols, ranges, opts)
  opts = opts or {}
  local hs = M.row_hash_sql(cols, opts)
  local function one(i, r)
    if opts.mode == "crc" then
      -- the row hash once per row (a derived table with LIMIT is never
      -- merged into the outer query), then two moments of it
      return "SELECT " .. i .. ", COUNT(*), COALESCE(SUM(h), 0), COALESCE(SUM(h * h), 0) FROM (SELECT " .. hs[1] ..
        " AS h FROM " .. tbl .. where(keycols, r.lo, r.hi) .. " LIMIT 18446744073709551615) AS mocdc_h"
    end
    local sums = {}
    for k, h in ipairs(hs) do sums[k] = "COALESCE(SUM(" .. h .. "), 0)" end
    return "SELECT " .. i .. ", COUNT(*), " .. table.concat(sums, ", ") .. " FROM " .. tbl .. where(keycols, r.lo, r.hi)
  end
  return union_batches(ranges, opts.per_statement, one)
end

-- Checksum of a result row (COUNT, SUM...) as {n=, s=}: s joins the components.
function M.sum_of(row, first)
  local parts = {}
  for i = first + 1, #row do parts[#parts + 1] = tostring(row[i]) end
  return { n = tonumber(row[first]), s = table.concat(parts, ":") }
end

-- Boundary keys: the key of every `step`-th row of the range, from the
-- (step+1)-th on, so each boundary starts a chunk of about `step` rows.
function M.sample_sql(tbl, keycols, lo, hi, step)
  local names = {}
  for i, c in ipairs(keycols) do names[i] = qi(c.name) end
  local list = table.concat(names, ", ")
  return "SELECT " .. list .. " FROM (SELECT " .. list .. ", ROW_NUMBER() OVER (ORDER BY " .. list ..
    ") AS mocdc_rn FROM " .. tbl .. where(keycols, lo, hi) .. ") AS mocdc_s WHERE mocdc_rn % " .. step ..
    " = 1 AND mocdc_rn > 1 ORDER BY " .. list
end

-- The rows of one range (no ORDER BY: the C merge is order-independent).
function M.select_sql(tbl, cols, keycols, lo, hi)
  local list = {}
  for i, c in ipairs(cols) do
    local e = col_expr(c)
    list[i] = e == qi(c.name) and e or (e .. " AS " .. qi(c.name))
  end
  return "SELECT " .. table.concat(list, ", ") .. " FROM " .. tbl .. where(keycols, lo, hi)
end

-- Rows whose key is one of `keys` (arrays of text values).
function M.keys_sql(tbl, cols, keycols, keys)
  local list = {}
  for i, c in ipairs(cols) do
    local e = col_expr(c)
    list[i] = e == qi(c.name) and e or (e .. " AS " .. qi(c.name))
  end
  local vals = {}
  for i, k in ipairs(keys) do
    local parts = {}
    for j, kc in ipairs(keycols) do parts[j] = M.literal(kc, k[j]) end
    vals[i] = #keycols == 1 and parts[1] or ("(" .. table.concat(parts, ", ") .. ")")
  end
  local names = {}
  for j, kc in ipairs(keycols) do names[j] = qi(kc.name) end
  local lhs = #keycols == 1 and names[1] or ("(" .. table.concat(names, ", ") .. ")")
  return "SELECT " .. table.concat(list, ", ") .. " FROM " .. tbl .. " WHERE " .. lhs .. " IN (" ..
    table.concat(vals, ", ") .. ")"
end

-- Keys of the rows of a system-versioned table changed after `lo` (a UTC
-- timestamp): a version created after it (insert, update) or ended after it
-- (update, delete). History rows are read like any other (MVCC).
function M.versioned_changes_sql(tbl, keycols, row_start, row_end, lo)
  local names = {}
  for j, kc in ipairs(keycols) do names[j] = qi(kc.name) end
  local l = "'" .. lo:gsub("[^%d%-%.: ]", "") .. "'"
  return "SELECT DISTINCT " .. table.concat(names, ", ") .. " FROM " .. tbl .. " FOR SYSTEM_TIME ALL WHERE " ..
    qi(row_start) .. " >= " .. l .. " OR (" .. qi(row_end) .. " >= " .. l .. " AND " .. qi(row_end) ..
    " <= UTC_TIMESTAMP(6))"
end

-- Keys of the rows whose TIMESTAMP update column is at or after `lo`, less
-- one unit of the column's precision `fsp` (0-6 fractional digits; the
-- column truncates the time it stores).
function M.updated_keys_sql(tbl, keycols, col, lo, fsp)
  local names = {}
  for j, kc in ipairs(keycols) do names[j] = qi(kc.name) end
  if type(lo) ~= "string" or not lo:match("^%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d%.?%d*$") then
    error("diff.updated_keys_sql: bad time " .. tostring(lo), 2)
  end
  local l = "'" .. lo .. "'"
  fsp = math.max(0, math.min(6, math.floor(tonumber(fsp) or 0)))
  return "SELECT " .. table.concat(names, ", ") .. " FROM " .. tbl .. " WHERE " .. qi(col) .. " >= " .. l ..
    " - INTERVAL " .. math.floor(10 ^ (6 - fsp) + 0.5) .. " MICROSECOND"
end

-- Row counts of ranges: statements of up to `per` (default 100) ranges,
-- each returning (range index, COUNT(*)).
function M.counts_sql(tbl, keycols, ranges, per)
  return union_batches(ranges, per, function(i, r)
    return "SELECT " .. i .. ", COUNT(*) FROM " .. tbl .. where(keycols, r.lo, r.hi)
  end)
end

-- The ranges of a chunk list: {lo=, hi=} per chunk.
function M.ranges(chunks)
  local out = {}
  for i, c in ipairs(chunks) do
    out[i] = { lo = c.lo, hi = chunks[i + 1] and chunks[i + 1].lo or nil }
  end
  return out
end

-- Chunks built from boundary keys (nil n/s: not summed yet).
function M.from_bounds(bounds)
  local out = { { lo = nil } }
  for _, b in ipairs(bounds) do out[#out + 1] = { lo = b } end
  return out
end

-- Indexes of chunks whose count or checksum differ (same boundaries).
function M.changed(old, new)
  local out = {}
  for i, c in ipairs(new) do
    local o = old[i]
    if not o or o.n ~= c.n or o.s ~= c.s then out[#out + 1] = i end
  end
  return out
end

local function add_sums(a, b)
  local pa, pb, out = {}, {}, {}
  for x in (a .. ":"):gmatch("([^:]*):") do pa[#pa + 1] = x end
  for x in (b .. ":"):gmatch("([^:]*):") do pb[#pb + 1] = x end
  for i = 1, math.max(#pa, #pb) do out[i] = rowdiff.sum_add(pa[i] or "0", pb[i] or "0") end
  return table.concat(out, ":")
end
M.add_sums = add_sums

-- Rebalance a summed list for the next iteration: a chunk with more than
-- 2 x target rows is split by split_fn(i, chunk) -> array of chunks covering
-- the same range (the first with the chunk's lo), already summed; adjacent
-- chunks whose rows add up to at most target / 2 are merged (sums add).
function M.rebalance(chunks, target, split_fn)
  local out = {}
  for i, c in ipairs(chunks) do
    if split_fn and c.n > 2 * target then
      local parts = split_fn(i, c)
      for _, p in ipairs(parts) do out[#out + 1] = p end
    else
      out[#out + 1] = c
    end
  end
  local merged = {}
  for _, c in ipairs(out) do
    local last = merged[#merged]
    if last and last.n + c.n <= target / 2 then
      last.n = last.n + c.n
      last.s = add_sums(last.s, c.s)
    else
      merged[#merged + 1] = { lo = c.lo, n = c.n, s = c.s }
    end
  end
  return merged
end

local hex, unhex = util.hex, util.unhex

local function enc_key(keycols, k)
  if not k then return cjson.null end
  local out = {}
  for i, c in ipairs(keycols) do
    local v = k[i]
    out[i] = (c.class == "bin" or c.class == "bit") and hex(v) or v
  end
  return out
end

local function dec_key(keycols, k)
  if k == nil or k == cjson.null then return nil end
  local out = {}
  for i, c in ipairs(keycols) do
    local v = k[i]
    out[i] = (c.class == "bin" or c.class == "bit") and unhex(v) or v
  end
  return out
end

-- Signature of a column list (names and types): a stored list is only
-- comparable while it is unchanged.
function M.signature(cols, mode)
  local parts = { mode or "md5" }
  for _, c in ipairs(cols) do parts[#parts + 1] = c.name .. " " .. (c.column_type or c.data_type or c.class) end
  return table.concat(parts, ",")
end

-- state: {sig=, gate=, checked=, snapshot=, vlo=, busy=, chunks={...}} <-> JSON text
-- (vlo: system-versioned tables, the lower bound of the next change scan;
-- busy: the last iteration found changes; keyed: written by a key-driven
-- iteration, so the chunk sums are those of the last full check)
function M.encode_state(state, keycols)
  local bounds, n, s = {}, {}, {}
  for i, c in ipairs(state.chunks) do
    if i > 1 then bounds[#bounds + 1] = enc_key(keycols, c.lo) end
    n[i] = c.n
    s[i] = c.s
  end
  return cjson.encode({ v = 1, sig = state.sig, gate = state.gate or cjson.null, checked = state.checked or 0,
    snapshot = state.snapshot or cjson.null, vlo = state.vlo or cjson.null, busy = state.busy or nil,
    keyed = state.keyed or nil,
    bounds = bounds, n = n, s = s })
end

function M.decode_state(text, keycols)
  if type(text) ~= "string" or text == "" then return nil end
  local ok, j = pcall(cjson.decode, text)
  if not ok or type(j) ~= "table" or j.v ~= 1 then return nil end
  local chunks = { { lo = nil, n = j.n[1], s = j.s[1] } }
  for i, b in ipairs(j.bounds) do
    chunks[#chunks + 1] = { lo = dec_key(keycols, b), n = j.n[i + 1], s = j.s[i + 1] }
  end
  local function nn(v) if v == cjson.null then return nil end return v end
  return { sig = j.sig, gate = nn(j.gate), checked = j.checked, snapshot = nn(j.snapshot), vlo = nn(j.vlo),
    busy = j.busy == true, keyed = j.keyed == true, chunks = chunks }
end

return M
