-- mocdc.rowdiff: the row merge (host/rowdiff.c) and engine/snapdiff_sql.lua: the chunk-list logic / SQL of
-- snapshot diffing (issue 5).
local batch = require("mocdc.batch")
local diff = require("mocdc.engine.snapdiff_sql")
local rowdiff = require("mocdc.rowdiff")
local NULL = batch.NULL

local cols = {
  { name = "id", class = "num", data_type = "int" },
  { name = "v", class = "str", data_type = "varchar" },
  { name = "b", class = "bin", data_type = "blob" },
}

local function ops(b)
  local out = {}
  for i = 1, b:count() do
    local op, before, after = b:get(i)
    out[#out + 1] = { op, before, after }
  end
  table.sort(out, function(x, y)
    local kx = (x[3] or x[2])[1]
    local ky = (y[3] or y[2])[1]
    if kx ~= ky then return kx < ky end
    return x[1] < y[1]
  end)
  return out
end

describe("rowdiff.rows", function()
  it("turns the previous and the current rows of a range into inserts, updates and deletes", function()
    local old = batch.of(cols, {
      { "1", "a", "\0" }, { "2", "b", NULL }, { "3", "c", "" }, { "4", "d", "x" },
    })
    local cur = batch.of(cols, {
      { "4", "d", "x" }, { "5", "e", NULL }, { "2", "b", "" }, { "1", "a", "\0" },
    })
    local out = batch.new(cols)
    local i, u, d = rowdiff.rows(old, cur, { 1 }, out)
    assert.same({ 1, 1, 1 }, { i, u, d })
    assert.same({
      { "update", { "2", "b", NULL }, { "2", "b", "" } }, -- NULL -> '' is a change
      { "delete", { "3", "c", "" }, nil },
      { "insert", nil, { "5", "e", NULL } },
    }, ops(out))
  end)

  it("compares keys byte for byte, whatever order the servers sorted by", function()
    local old = batch.of(cols, { { "1", "a", "k" }, { "10", "b", "k" } })
    local cur = batch.of(cols, { { "10", "b", "k" }, { "1", "a", "k" }, { "01", "a", "k" } })
    local out = batch.new(cols)
    assert.same({ 1, 0, 0 }, { rowdiff.rows(old, cur, { 1 }, out) })
    -- composite keys, one part NULL-free, values with embedded NUL bytes
    local old2 = batch.of(cols, { { "1", "a\0b", "x" }, { "1", "a", "y" } })
    local cur2 = batch.of(cols, { { "1", "a", "y" }, { "1", "a\0b", "z" } })
    local out2 = batch.new(cols)
    assert.same({ 0, 1, 0 }, { rowdiff.rows(old2, cur2, { 1, 2 }, out2) })
    local op, before, after = out2:get(1)
    assert.equal("update", op)
    assert.same({ "1", "a\0b", "x" }, before)
    assert.same({ "1", "a\0b", "z" }, after)
  end)

  it("diffs tables without a key as multisets (duplicates count)", function()
    local old = batch.of(cols, { { "1", "a", "x" }, { "1", "a", "x" }, { "2", "b", NULL } })
    local cur = batch.of(cols, { { "1", "a", "x" }, { "2", "b", NULL }, { "2", "b", NULL }, { "3", "c", "y" } })
    local out = batch.new(cols)
    assert.same({ 2, 0, 1 }, { rowdiff.rows(old, cur, {}, out) })
    assert.same({
      { "delete", { "1", "a", "x" }, nil },
      { "insert", nil, { "2", "b", NULL } },
      { "insert", nil, { "3", "c", "y" } },
    }, ops(out))
  end)

  it("handles empty sides and many rows", function()
    local out = batch.new(cols)
    assert.same({ 0, 0, 0 }, { rowdiff.rows(batch.new(cols), batch.new(cols), { 1 }, out) })
    local old, cur = batch.new(cols), batch.new(cols)
    for k = 1, 20000 do
      old:add("insert", nil, { tostring(k), "v" .. k, NULL })
      if k % 10 ~= 0 then cur:add("insert", nil, { tostring(k), k % 7 == 0 and "changed" or ("v" .. k), NULL }) end
    end
    for k = 20001, 20100 do cur:add("insert", nil, { tostring(k), "new", NULL }) end
    local i, u, d = rowdiff.rows(old, cur, { 1 }, out)
    assert.equal(100, i)
    assert.equal(2000, d)
    local expect_u = 0
    for k = 1, 20000 do if k % 10 ~= 0 and k % 7 == 0 then expect_u = expect_u + 1 end end
    assert.equal(expect_u, u)
    assert.equal(i + u + d, out:count())
  end)

  it("raises on misuse", function()
    local other = batch.new({ { name = "id", class = "num" } })
    assert.has_error(function() rowdiff.rows(batch.new(cols), other, { 1 }, batch.new(cols)) end,
      "rowdiff.rows: batches have different column counts (3, 1, 3)")
    local b = batch.new(cols)
    assert.has_error(function() rowdiff.rows(b, batch.new(cols), { 4 }, batch.new(cols)) end)
    assert.has_error(function() rowdiff.rows(b, batch.new(cols), { 1 }, b) end)
  end)
end)

describe("rowdiff.sum_add", function()
  it("adds decimal integers exactly beyond 2^64", function()
    assert.equal("36893488147419103230", rowdiff.sum_add("18446744073709551615", "18446744073709551615"))
    assert.equal("0", rowdiff.sum_add("0", "0"))
    assert.equal("1000", rowdiff.sum_add("999", "1"))
    assert.equal("7:30", diff.add_sums("3:10", "4:20"))
    assert.has_error(function() rowdiff.sum_add("-1", "2") end)
  end)
end)

describe("diff SQL", function()
  local kc = { { name = "id", class = "num" } }
  local kc2 = { { name = "a", class = "str" }, { name = "b", class = "bin" } }

  it("builds key range predicates (lo inclusive, hi exclusive), composite keys expanded", function()
    assert.equal("`id` >= 10 AND `id` < 20", diff.range_sql(kc, { "10" }, { "20" }))
    assert.equal("`id` < 20", diff.range_sql(kc, nil, { "20" }))
    assert.is_nil(diff.range_sql(kc, nil, nil))
    assert.equal("((`a` > 'x') OR (`a` = 'x' AND `b` >= X'00FF')) AND ((`a` < 'y\\'') OR (`a` = 'y\\'' AND `b` < ''))",
      diff.range_sql(kc2, { "x", "\0\255" }, { "y'", "" }))
  end)

  it("checksums ranges with MD5 sums (not XOR of CRC32), lengths and NULL markers", function()
    local fcols = { { name = "id", class = "num", data_type = "int" }, { name = "f", class = "num", data_type = "float" },
      { name = "s", class = "str", data_type = "varchar" } }
    local h = diff.row_hash_sql(fcols)
    assert.same({ "CAST(CONV(SUBSTRING(MD5(CONCAT_WS('#', `id`, CAST(`f` AS DOUBLE), `s`, LENGTH(`s`), " ..
      "CONCAT(ISNULL(`id`), ISNULL(`f`), ISNULL(`s`)))), 1, 16), 16, 10) AS UNSIGNED)" }, h)
    local stmts = diff.sums_sql("`d`.`t`", fcols, kc, { { lo = nil, hi = { "5" } }, { lo = { "5" } } },
      { per_statement = 1 })
    assert.equal(2, #stmts)
    assert.equal("SELECT 1, COUNT(*), COALESCE(SUM(" .. h[1] .. "), 0) FROM `d`.`t` WHERE `id` < 5", stmts[1])
    assert.equal("SELECT 2, COUNT(*), COALESCE(SUM(" .. h[1] .. "), 0) FROM `d`.`t` WHERE `id` >= 5", stmts[2])
    local one = diff.sums_sql("`d`.`t`", fcols, kc, { {}, {}, {} })
    assert.equal(1, #one)
    assert.equal(2, select(2, one[1]:gsub("UNION ALL", "")))
    local mo = diff.row_hash_sql(fcols, { mode = "md5crc" })
    assert.equal(2, #mo)
    assert.matches("^CRC32%(MD5%(CONCAT_WS", mo[1])
    assert.matches("^CRC32%(SHA1%(CONCAT_WS", mo[2])
  end)

  it("checksums ranges with CRC32 rows and two moments (crc mode): strings by their own CRC32, markers only for nullable columns", function()
    local cols = { { name = "id", class = "num", data_type = "int", nullable = false },
      { name = "f", class = "num", data_type = "float", nullable = true },
      { name = "s", class = "str", data_type = "varchar", nullable = false },
      { name = "b", class = "bin", data_type = "varbinary", nullable = true },
      { name = "d", class = "str", data_type = "datetime", nullable = true } }
    local h = diff.row_hash_sql(cols, { mode = "crc" })
    assert.same({ "CRC32(CONCAT_WS('#', `id`, CAST(`f` AS DOUBLE), CRC32(`s`), CRC32(`b`), `d`, " ..
      "CONCAT(ISNULL(`f`), ISNULL(`b`), ISNULL(`d`))))" }, h)
    assert.same({ "CRC32(CONCAT_WS('#', `id`, CRC32(`s`)))" }, diff.row_hash_sql({ cols[1], cols[3] }, { mode = "crc" }))
    local stmts = diff.sums_sql("`d`.`t`", cols, kc, { { lo = nil, hi = { "5" } }, { lo = { "5" } } }, { mode = "crc" })
    assert.equal(1, #stmts)
    assert.equal("SELECT 1, COUNT(*), COALESCE(SUM(h), 0), COALESCE(SUM(h * h), 0) FROM (SELECT " .. h[1] ..
      " AS h FROM `d`.`t` WHERE `id` < 5 LIMIT 18446744073709551615) AS mocdc_h UNION ALL " ..
      "SELECT 2, COUNT(*), COALESCE(SUM(h), 0), COALESCE(SUM(h * h), 0) FROM (SELECT " .. h[1] ..
      " AS h FROM `d`.`t` WHERE `id` >= 5 LIMIT 18446744073709551615) AS mocdc_h", stmts[1])
    assert.same({ n = 3, s = "12:100" }, diff.sum_of({ "1", "3", "12", "100" }, 2))
  end)

  it("reads the keys updated since a time (less one unit of the column's precision: it truncates) and counts ranges", function()
    assert.equal("SELECT `id` FROM `d`.`t` WHERE `updated` >= '2026-11-22 02:00:00.123456' - INTERVAL 1000000 MICROSECOND",
      diff.updated_keys_sql("`d`.`t`", kc, "updated", "2026-11-22 02:00:00.123456", 0))
    assert.equal("SELECT `id` FROM `d`.`t` WHERE `updated` >= '2026-11-22 02:00:00.123456' - INTERVAL 1000 MICROSECOND",
      diff.updated_keys_sql("`d`.`t`", kc, "updated", "2026-11-22 02:00:00.123456", 3))
    assert.equal("SELECT `id` FROM `d`.`t` WHERE `updated` >= '2026-11-22 02:00:00.123456' - INTERVAL 1 MICROSECOND",
      diff.updated_keys_sql("`d`.`t`", kc, "updated", "2026-11-22 02:00:00.123456", 6))
    assert.has_error(function() diff.updated_keys_sql("`d`.`t`", kc, "updated", "2026-11-22 02:00:00'; DROP TABLE x") end,
      "diff.updated_keys_sql: bad time 2026-11-22 02:00:00'; DROP TABLE x")
    assert.same({ "SELECT 1, COUNT(*) FROM `d`.`t` WHERE `id` < 5 UNION ALL SELECT 2, COUNT(*) FROM `d`.`t` WHERE `id` >= 5" },
      diff.counts_sql("`d`.`t`", kc, { { hi = { "5" } }, { lo = { "5" } } }))
    assert.same({ "SELECT 1, COUNT(*) FROM `d`.`t`" }, diff.counts_sql("`d`.`t`", kc, { {} }))
  end)

  it("samples boundaries with ROW_NUMBER and selects ranges", function()
    assert.equal("SELECT `id` FROM (SELECT `id`, ROW_NUMBER() OVER (ORDER BY `id`) AS mocdc_rn FROM `d`.`t` " ..
      "WHERE `id` >= 1) AS mocdc_s WHERE mocdc_rn % 1000 = 1 AND mocdc_rn > 1 ORDER BY `id`",
      diff.sample_sql("`d`.`t`", kc, { "1" }, nil, 1000))
    assert.equal("SELECT `id`, CAST(`f` AS DOUBLE) AS `f` FROM `d`.`t` WHERE `id` >= 1 AND `id` < 9",
      diff.select_sql("`d`.`t`", { { name = "id", class = "num" }, { name = "f", class = "num", data_type = "float" } },
        kc, { "1" }, { "9" }))
  end)
end)

describe("diff chunk lists", function()
  it("finds changed chunks and rebalances (split big, merge small, sums add)", function()
    local old = { { lo = nil, n = 10, s = "5" }, { lo = { "10" }, n = 10, s = "6" }, { lo = { "20" }, n = 10, s = "7" } }
    local new = { { lo = nil, n = 10, s = "5" }, { lo = { "10" }, n = 10, s = "9" }, { lo = { "20" }, n = 11, s = "7" } }
    assert.same({ 2, 3 }, diff.changed(old, new))
    assert.same({}, diff.changed(old, old))
    local list = { { lo = nil, n = 1, s = "1" }, { lo = { "2" }, n = 2, s = "2" }, { lo = { "5" }, n = 50, s = "9" },
      { lo = { "90" }, n = 3, s = "4" } }
    local split_calls = 0
    local out = diff.rebalance(list, 10, function(i, c)
      split_calls = split_calls + 1
      assert.equal(3, i)
      return { { lo = c.lo, n = 25, s = "4" }, { lo = { "50" }, n = 25, s = "5" } }
    end)
    assert.equal(1, split_calls)
    assert.same({ { lo = nil, n = 3, s = "3" }, { lo = { "5" }, n = 25, s = "4" }, { lo = { "50" }, n = 25, s = "5" },
      { lo = { "90" }, n = 3, s = "4" } }, out)
  end)

  it("stores lists as JSON, binary keys hex-encoded", function()
    local keys = { { name = "a", class = "str" }, { name = "b", class = "bin" } }
    local st = { sig = "md5,a varchar(10),b varbinary(4)", gate = "123", checked = 5,
      chunks = { { lo = nil, n = 3, s = "77" }, { lo = { "x", "\0\255" }, n = 4, s = "88" } } }
    local text = diff.encode_state(st, keys)
    assert.is_nil(text:find("\0", 1, true))
    local back = diff.decode_state(text, keys)
    assert.same(st.chunks, back.chunks)
    assert.equal("123", back.gate)
    assert.is_nil(diff.decode_state("not json", keys))
    assert.is_nil(diff.decode_state(nil, keys))
  end)
end)

describe("diff engine: statements on several connections (run_all)", function()
  local engine = require("mocdc.engine.snapdiff")
  local errors = require("mocdc.errors")

  -- a connection that answers "SELECT n" with {{n}}, fails on "FAIL", and
  -- records what it ran; reap_query without a pending send is an error
  local function fake(label)
    local c = { label = label, ran = {}, pending = nil }
    function c:send(sql) assert(not self.pending, "send while busy") self.pending = sql return true end
    function c:reap_query()
      local sql = assert(self.pending, "reap without send")
      self.pending = nil
      self.ran[#self.ran + 1] = sql
      if sql == "FAIL" then return nil, "boom", 1064 end
      return { { sql:match("%d+") } }
    end
    function c:query(sql) self.ran[#self.ran + 1] = sql return { { sql:match("%d+") } } end
    return c
  end

  it("spreads statements over the connections in waves and hands every result over", function()
    local a, b = fake("a"), fake("b")
    local got = {}
    engine.run_all({ a, b }, { "SELECT 1", "SELECT 2", "SELECT 3", "SELECT 4", "SELECT 5" }, "summing",
      function(rows) got[#got + 1] = rows[1][1] end)
    table.sort(got)
    assert.same({ "1", "2", "3", "4", "5" }, got)
    assert.same({ "SELECT 1", "SELECT 3", "SELECT 5" }, a.ran)
    assert.same({ "SELECT 2", "SELECT 4" }, b.ran)
  end)

  it("reaps every statement in flight before raising, so the connections stay usable", function()
    local a, b = fake("a"), fake("b")
    local ok, err = pcall(engine.run_all, { a, b }, { "FAIL", "SELECT 2", "SELECT 3" }, "summing t", function() end)
    assert.is_false(ok)
    assert.equals("summing t on a failed: boom", errors.message(err))
    assert.is_nil(a.pending)
    assert.is_nil(b.pending)
    assert.same({ "SELECT 2" }, b.ran)
  end)

  it("runs on the one connection with query() when there is no helper", function()
    local a = fake("a")
    local got = {}
    engine.run_all({ a }, { "SELECT 7", "SELECT 8" }, "summing", function(rows) got[#got + 1] = rows[1][1] end)
    assert.same({ "7", "8" }, got)
  end)
end)
