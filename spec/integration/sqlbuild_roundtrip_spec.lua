-- Round trip through mocdc.sqlbuild against a real server: rows read in text
-- form (conn), rebuilt as SQL by sqlbuild, written to a second table, compared
-- byte for byte (every column, NULLs) and with CHECKSUM TABLE.
local batch = require("mocdc.batch")
local sb = require("mocdc.sqlbuild")
local conn = require("mocdc.conn.lib")
local NULL = batch.NULL

local mdb = require("spec.helpers.mariadb")

local DB = "mocdc_sqlbuild_rt"
local COLS = [[
  ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED, mi MEDIUMINT, miu MEDIUMINT UNSIGNED,
  i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED, dec65 DECIMAL(65,30), dec0 DECIMAL(10,0),
  f FLOAT, d DOUBLE, b1 BIT(1), b10 BIT(10), b64 BIT(64),
  dt DATE, tm TIME(6), dtm DATETIME(6), ts TIMESTAMP(6) NULL, yr YEAR,
  c CHAR(10), vc VARCHAR(100), bn BINARY(4), vbn VARBINARY(50), bl BLOB, tx TEXT,
  en ENUM('a','b','c d'), st SET('x','y','z'), js JSON]]
local NAMES = { "ti", "tiu", "si", "siu", "mi", "miu", "i", "iu", "bi", "biu", "dec65", "dec0", "f", "d", "b1",
  "b10", "b64", "dt", "tm", "dtm", "ts", "yr", "c", "vc", "bn", "vbn", "bl", "tx", "en", "st", "js" }

-- FLOAT values here have <= 6 significant digits: MariaDB's text form of FLOAT
-- keeps only 6 (see the FLOAT test below).
local ROWS = {
  [[1, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0,
    '-99999999999999999999999999999999999.999999999999999999999999999999', -9999999999,
    -3.40282e38, -1.7976931348623157e308, 0, 0, 0,
    '1000-01-01', '-838:59:59.000000', '1000-01-01 00:00:00.000000', '1970-01-01 00:00:01.000000', 1901,
    '', '', X'00000000', '', '', '', 'a', '', 'null']],
  [[2, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, 9223372036854775807,
    18446744073709551615,
    '99999999999999999999999999999999999.999999999999999999999999999999', 9999999999,
    3.40282e38, 1.7976931348623157e308, 1, b'1111111111', b'1111111111111111111111111111111111111111111111111111111111111111',
    '9999-12-31', '838:59:59.000000', '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999999', 2155,
    'ünï😀', 'a''b"c\\d\ne\rf\Zg\0h', X'00FF0A5C', X'00275C220A0D1A00', X'0001020304FF', 'tab\there',
    'c d', 'x,y,z', '{"a": [1, 2.5, "x\\"y"], "b": null, "c": "😀"}']],
  [[3, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, '0.000000000000000000000000000001', 0,
    0.1, 0.1, 0, b'0000000001', b'1000000000000000000000000000000000000000000000000000000000000001',
    '2024-02-29', '-00:00:00.000001', '2024-01-15 14:30:00.123456', '2024-01-15 14:30:00.123456', 2024,
    '😀😀', 'Robert''); DROP TABLE x; --', X'61', X'5C', NULL, REPEAT('long text ', 300),
    'b', 'y', '[]']],
  "4" .. (", NULL"):rep(#NAMES), -- NULL in every column
  [[5, -1, 1, -1, 1, -1, 1, -1, 1, -1, 1, '-0.5', -1, -1.25e-10, 2.2250738585072014e-308, 1, b'0101010101',
    X'0123456789ABCDEF', '0000-00-00', '-12:00:00.5', '2000-02-29 12:00:00.000001', NULL, 0,
    'NULL', 'NULL', NULL, X'4E554C4C', X'00', 'NULL', NULL, 'x,z', '"str"']],
}

local c
local function q(sql)
  local r, err = c:query(sql)
  if r == nil then error(tostring(err) .. " in: " .. sql:sub(1, 300), 2) end
  return r
end

local function rows_of(tbl, order)
  return q("SELECT * FROM " .. DB .. "." .. tbl .. " ORDER BY " .. (order or "id"))
end

-- The table as a batch of inserts, with its columns (names and classes).
local function read_batch(tbl, order)
  local rows, cols = c:query("SELECT * FROM " .. DB .. "." .. tbl .. " ORDER BY " .. (order or "id"))
  assert(rows, cols)
  local bcols = {}
  for i, col in ipairs(cols) do bcols[i] = { name = col.name, class = col.class } end
  local b = batch.new(bcols)
  for _, r in ipairs(rows) do b:add("insert", nil, r) end
  return b, rows
end

local function apply(b, tbl, opts)
  opts.table = sb.quote_table(DB, tbl)
  local stmts, err = sb.build(b, opts)
  assert(stmts, err)
  for _, sql in ipairs(stmts) do q(sql) end
  return stmts
end

local function checksum(tbl)
  return q("CHECKSUM TABLE " .. DB .. "." .. tbl .. " EXTENDED")[1][2]
end

local function assert_same_tables(a, b, order)
  assert.same(rows_of(a, order), rows_of(b, order))
  assert.equal(checksum(a), checksum(b))
end

mdb.describe("sqlbuild round trip #integration", function()
  setup(function()
    local srv = mdb.start({ name = "sqlbuild" })
    local err
    c, err = conn.connect(srv:conn_opts())
    assert(c, err)
    q("SET NAMES utf8mb4")
    q("SET time_zone = '+00:00'")
    q("SET sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'") -- backslash escapes on; zero dates allowed
    q("DROP DATABASE IF EXISTS " .. DB)
    q("CREATE DATABASE " .. DB)
    for _, t in ipairs({ "src", "dst" }) do
      q("CREATE TABLE " .. DB .. "." .. t .. " (id INT PRIMARY KEY, " .. COLS .. ") CHARSET utf8mb4")
    end
    for _, r in ipairs(ROWS) do q("INSERT INTO " .. DB .. ".src VALUES (" .. r .. ")") end
  end)

  teardown(function()
    if c then c:close() end
  end)

  it("copies every type exactly with INSERT", function()
    q("TRUNCATE " .. DB .. ".dst")
    local b = read_batch("src")
    local stmts = apply(b, "dst", { key = { 1 }, mode = "insert" })
    assert.equal(1, #stmts)
    assert_same_tables("src", "dst")
  end)

  it("copies exactly with REPLACE and with upsert, over existing rows, split into small statements", function()
    for _, mode in ipairs({ "replace", "upsert" }) do
      q("TRUNCATE " .. DB .. ".dst")
      q("INSERT INTO " .. DB .. ".dst (id, vc) VALUES (2, 'old'), (4, 'old'), (9, 'gone')")
      local b = read_batch("src")
      b:add("delete", { "9" }, nil)
      local stmts = apply(b, "dst", { key = { 1 }, mode = mode, max_len = 5000 })
      assert.is_true(#stmts >= 3)
      for _, s in ipairs(stmts) do assert.is_true(#s <= 5000) end
      assert_same_tables("src", "dst")
    end
  end)

  it("applies updates, key changes and deletes like the source", function()
    -- the changes go to a copy of src (the other specs read src as it was, in any order)
    q("DROP TABLE IF EXISTS " .. DB .. ".mut")
    q("CREATE TABLE " .. DB .. ".mut LIKE " .. DB .. ".src")
    q("INSERT INTO " .. DB .. ".mut SELECT * FROM " .. DB .. ".src")
    local _, before = read_batch("mut")
    -- the same changes on the source, captured as before/after images
    q("UPDATE " .. DB .. ".mut SET vc = CONCAT(vc, '+'), b64 = b'1' WHERE id IN (1, 2)")
    q("UPDATE " .. DB .. ".mut SET id = 10 WHERE id = 3")
    q("DELETE FROM " .. DB .. ".mut WHERE id = 5")
    local b2, after = read_batch("mut")
    local by = {}
    for _, r in ipairs(after) do by[r[1]] = r end
    local ch = batch.new(b2:columns())
    ch:add("update", before[1], by["1"])
    ch:add("update", before[2], by["2"])
    ch:add("update", before[3], by["10"])
    ch:add("delete", before[5], nil)
    for _, dialect in ipairs({ "mysql", "matrixone" }) do
      q("TRUNCATE " .. DB .. ".dst")
      apply(batch.of(b2:columns(), before), "dst", { key = { 1 }, mode = "insert" })
      apply(ch, "dst", { key = { 1 }, dialect = dialect })
      assert_same_tables("mut", "dst")
    end
  end)

  it("deletes by composite key in both dialects", function()
    q("TRUNCATE " .. DB .. ".dst")
    local b, rows = read_batch("src")
    apply(b, "dst", { key = { 1 }, mode = "insert" })
    local d = batch.new(b:columns())
    d:add("delete", rows[1], nil)
    d:add("delete", rows[2], nil)
    -- key (id, vc): vc holds quotes, backslashes, NUL, newlines
    apply(d, "dst", { key = { 1, 25 }, dialect = "mysql" })
    assert.equal(#rows - 2, #rows_of("dst"))
    local d2 = batch.new(b:columns())
    d2:add("delete", rows[3], nil)
    apply(d2, "dst", { key = { 1, 29 }, dialect = "matrixone" })
    assert.equal(#rows - 3, #rows_of("dst"))
  end)

  it("without a key, NULL-safe deletes find every row (all types but FLOAT)", function()
    local cols = COLS:gsub("f FLOAT, ", "")
    q("DROP TABLE IF EXISTS " .. DB .. ".nokey")
    q("CREATE TABLE " .. DB .. ".nokey (id INT, " .. cols .. ") CHARSET utf8mb4")
    local list = "id," .. table.concat(NAMES, ","):gsub("f,", "")
    q("INSERT INTO " .. DB .. ".nokey SELECT " .. list .. " FROM " .. DB .. ".src")
    q("INSERT INTO " .. DB .. ".nokey SELECT " .. list .. " FROM " .. DB .. ".src") -- duplicates
    local b, rows = read_batch("nokey", "id")
    local d = batch.new(b:columns())
    for i = 1, #rows, 2 do d:add("delete", rows[i], nil) end -- one copy of each row
    local stmts = apply(d, "nokey", {})
    assert.equal(#rows / 2, #stmts)
    local left = rows_of("nokey", "id")
    assert.equal(#rows / 2, #left)
    local del = batch.new(b:columns())
    for _, r in ipairs(left) do del:add("delete", r, nil) end
    apply(del, "nokey", {})
    assert.same({}, rows_of("nokey", "id"))
  end)

  it("FLOAT: read as CAST(f AS DOUBLE) round-trips exactly (the plain text form keeps 6 digits)", function()
    q("DROP TABLE IF EXISTS " .. DB .. ".fl")
    q("DROP TABLE IF EXISTS " .. DB .. ".fl2")
    q("CREATE TABLE " .. DB .. ".fl (id INT PRIMARY KEY, f FLOAT)")
    q("CREATE TABLE " .. DB .. ".fl2 LIKE " .. DB .. ".fl")
    q("INSERT INTO " .. DB .. ".fl VALUES (1, 123456789), (2, 1.2345678), (3, 3.4028234e38), (4, 1.17549435e-38),"
      .. " (5, 1.0000001), (6, 16777217), (7, -0.1), (8, 1e-45)")
    local plain = q("SELECT id, f FROM " .. DB .. ".fl ORDER BY id")
    local rows, cols = c:query("SELECT id, CAST(f AS DOUBLE) AS f FROM " .. DB .. ".fl ORDER BY id")
    local b = batch.new({ { name = "id", class = cols[1].class }, { name = "f", class = cols[2].class } })
    for _, r in ipairs(rows) do b:add("insert", nil, r) end
    apply(b, "fl2", { key = { 1 }, mode = "insert" })
    assert.same(q("SELECT id, HEX(CAST(f AS DOUBLE)) FROM " .. DB .. ".fl ORDER BY id"),
      q("SELECT id, HEX(CAST(f AS DOUBLE)) FROM " .. DB .. ".fl2 ORDER BY id"))
    -- the text form is lossy on this server: report it (not an assertion on the server)
    local lossy = {}
    for i, r in ipairs(plain) do
      if r[2] ~= NULL and tonumber(r[2]) ~= tonumber(rows[i][2]) then lossy[#lossy + 1] = r[2] .. " vs " .. rows[i][2] end
    end
    if #lossy > 0 then
      io.stderr:write("\nnote: FLOAT text form is not exact here: " .. table.concat(lossy, "; ") .. "\n")
    end
  end)
end)
