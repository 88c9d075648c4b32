-- mocdc.binlog against real throwaway MariaDB servers: every column type decoded
-- from the binlog must be byte-identical to what SELECT returns over the text
-- protocol (insert, update to and from NULL, delete), with column names from the
-- table map (binlog_row_metadata=FULL) or from set_schema (NO_LOG), plain and
-- compressed events. Also: ROTATE, heartbeats, non-blocking EOF, purged files,
-- binlog_format/log_bin errors, server_id clashes, a 1,000,000-row transaction with
-- bounded memory, and decode throughput.
local binlog = require("mocdc.binlog")
local util = require("mocdc.util.lib")
local mdb = require("spec.helpers.mariadb")

local NULL = mdb.NULL

local function unhex(h)
  return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end
local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02X", c:byte()) end))
end
local function show(v)
  if v == NULL or v == nil then return "NULL" end
  if #v <= 60 and not v:find("[%z\1-\31\127-\255]") then return "'" .. v .. "'" end
  return "x'" .. hex(v:sub(1, 60)) .. (#v > 60 and ("...' (" .. #v .. " bytes)") or "'")
end

-- AddressSanitizer keeps freed memory in quarantine: RSS bounds mean nothing there
local function under_asan()
  local f = io.open("/proc/self/maps")
  local m = f and f:read("*a") or ""
  if f then f:close() end
  return m:find("libasan", 1, true) ~= nil
end

local next_server_id = 9000
local function sid()
  next_server_id = next_server_id + 1
  return next_server_id
end

local function master_status(srv)
  local rows = srv:rows("SHOW MASTER STATUS")
  return rows[1][1], tonumber(rows[1][2])
end

local function open(srv, opts)
  local o = { host = srv.host, port = srv.port, user = srv.user, password = srv.password,
              server_id = sid(), blocking = false }
  for k, v in pairs(opts or {}) do o[k] = v end
  return binlog.open(o)
end

-- A conn-like adapter over the harness client for binlog.schema_columns.
local function schema_conn(srv)
  return {
    query = function(_, sql) return srv:rows(sql) end,
    escape = function(_, s) return (s:gsub("\\", "\\\\"):gsub("'", "''")) end,
  }
end

-- Read a non-blocking stream to EOF. Rows of tables in `dbs` are wanted; need_schema
-- is answered from information_schema. Returns events, rows ({db, table, op, before, after}).
local function drain(srv, s, o)
  o = o or {}
  local dbs = o.dbs or { t = true }
  local events, rows = {}, {}
  while true do
    local ev, err, errno = s:next(o.max_rows)
    if not ev then
      assert(err == nil, "stream error: " .. tostring(err) .. " (" .. tostring(errno) .. ")")
      break
    end
    events[#events + 1] = ev
    if ev.type == "table" then
      s:want(ev.db, ev.table, dbs[ev.db] == true)
      if o.on_table then o.on_table(s, ev) end
    elseif ev.type == "need_schema" then
      assert(o.schema_on_need, "unexpected need_schema for " .. ev.db .. "." .. ev.table)
      s:set_schema(ev.db, ev.table, assert(binlog.schema_columns(schema_conn(srv), ev.db, ev.table)))
    elseif ev.type == "rows" then
      local b = ev.batch
      local columns = b:columns()
      for i = 1, b:count() do
        local op, before, after = b:get(i)
        rows[#rows + 1] = { db = ev.db, table = ev.table, op = op, before = before, after = after,
                            columns = columns }
      end
      b:free()
    end
  end
  return events, rows
end

---------------------------------------------------------------------------
-- the all-types table
---------------------------------------------------------------------------

local COLS = { -- name, type, class expected in the batch
  { "ti", "TINYINT", "num" }, { "tiu", "TINYINT UNSIGNED", "num" }, { "si", "SMALLINT", "num" },
  { "siu", "SMALLINT UNSIGNED", "num" }, { "mi", "MEDIUMINT", "num" }, { "miu", "MEDIUMINT UNSIGNED", "num" },
  { "i", "INT", "num" }, { "iu", "INT UNSIGNED", "num" }, { "bi", "BIGINT", "num" },
  { "biu", "BIGINT UNSIGNED", "num" },
  { "d", "DECIMAL(65,30)", "num" }, { "d2", "DECIMAL(10,2) UNSIGNED", "num" }, { "d0", "DECIMAL(18,0)", "num" },
  { "d9", "DECIMAL(9,9)", "num" },
  { "f", "FLOAT", "num" }, { "db", "DOUBLE", "num" },
  { "b1", "BIT(1)", "bit" }, { "b10", "BIT(10)", "bit" }, { "b64", "BIT(64)", "bit" },
  { "dt", "DATE", "str" }, { "tm", "TIME(6)", "str" }, { "tm0", "TIME", "str" }, { "tm3", "TIME(3)", "str" },
  { "tm1", "TIME(1)", "str" }, { "dtm", "DATETIME(6)", "str" }, { "dtm0", "DATETIME", "str" },
  { "dtm2", "DATETIME(2)", "str" }, { "ts", "TIMESTAMP(6) NULL DEFAULT NULL", "str" },
  { "ts0", "TIMESTAMP NULL DEFAULT NULL", "str" }, { "ts4", "TIMESTAMP(4) NULL DEFAULT NULL", "str" },
  { "y", "YEAR", "num" },
  { "c", "CHAR(10) CHARACTER SET utf8mb4", "str" }, { "cl", "CHAR(100) CHARACTER SET utf8mb4", "str" },
  { "vc", "VARCHAR(300) CHARACTER SET utf8mb4", "str" }, { "vl", "VARCHAR(10) CHARACTER SET latin1", "str" },
  { "bn", "BINARY(4)", "bin" }, { "vb", "VARBINARY(300)", "bin" }, { "bl", "BLOB", "bin" }, { "tb", "TINYBLOB", "bin" },
  { "tx", "TEXT CHARACTER SET utf8mb4", "str" }, { "mt", "MEDIUMTEXT", "str" },
  { "e", "ENUM('a','b','c''d','é')", "str" }, { "st", "SET('x','y','z')", "str" }, { "j", "JSON", "str" },
  { "g", "GEOMETRY", "bin" },
}

-- rows: SQL literals in COLS order
local ROW_MIN = {
  "-128", "0", "-32768", "0", "-8388608", "0", "-2147483648", "0", "-9223372036854775808", "0",
  "'-99999999999999999999999999999999999.999999999999999999999999999999'", "0.00", "-999999999999999999",
  "-0.999999999",
  "-3.40282e38", "-1.7976931348623157e308",
  "b'0'", "b'0000000000'", "b'0'",
  "'1000-01-01'", "'-838:59:59.000000'", "'-838:59:59'", "'-00:00:00.001'", "'-00:00:00.1'",
  "'1000-01-01 00:00:00.000000'", "'1000-01-01 00:00:00'", "'1000-01-01 00:00:00.01'",
  "'1970-01-01 00:00:01.000000'", "'1970-01-01 00:00:01'", "'1970-01-01 00:00:01.0001'", "0",
  "''", "''", "''", "''", "''", "''", "''", "''", "''", "''", "'a'", "''", "'{}'", "ST_GeomFromText('POINT(0 0)')",
}
local ROW_MAX = {
  "127", "255", "32767", "65535", "8388607", "16777215", "2147483647", "4294967295", "9223372036854775807",
  "18446744073709551615",
  "'99999999999999999999999999999999999.999999999999999999999999999999'", "99999999.99", "999999999999999999",
  "0.999999999",
  "3.40282e38", "1.7976931348623157e308",
  "b'1'", "b'1111111111'", "b'1111111111111111111111111111111111111111111111111111111111111111'",
  "'9999-12-31'", "'838:59:59.999999'", "'838:59:59'", "'838:59:58.999'", "'838:59:58.9'",
  "'9999-12-31 23:59:59.999999'", "'9999-12-31 23:59:59'", "'9999-12-31 23:59:59.99'",
  "'2038-01-19 03:14:07.999999'", "'2038-01-19 03:14:07'", "'2038-01-19 03:14:07.9999'", "2155",
  "'ten chars!'", "REPEAT('😀', 100)", "REPEAT('😀', 300)", "'latin1 é'",
  "X'FFFFFFFF'", "CONCAT(X'00FF00', REPEAT(X'00', 290), X'01')", "REPEAT(X'00', 1000)", "X'000102'",
  "'text with ''quote'', \\\\ backslash, \\n newline, \\t tab and 😀'", "REPEAT('x', 70000)",
  "'é'", "'x,y,z'", "'{\"k\": [1, 2.5e10, \"😀\", null, true], \"s\": \"a\\\\\"b\"}'",
  "ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))')",
}
local ROW_MISC = {
  "-1", "1", "-1", "1", "-1", "1", "-1", "1", "-1", "1",
  "'-0.000000000000000000000000000001'", "0.01", "-1", "0.000000001",
  "3.14", "0.1",
  "b'1'", "b'0000000001'", "b'0000000000000000000000000000000000000000000000000000000000000001'",
  "'2024-02-29'", "'-00:00:01.500000'", "'-00:00:01'", "'-01:02:03.450'", "'-00:00:59.9'",
  "'2024-02-29 12:34:56.789012'", "'2024-02-29 12:34:56'", "'2024-02-29 12:34:56.07'",
  "'2024-02-29 12:34:56.000001'", "'2024-02-29 12:34:56'", "'2024-02-29 12:34:56.0102'", "1901",
  "'😀😀'", "'trailing  '", "'multi\\nline\\ttab'", "'x'",
  "'a'", "X'61'", "X'0000'", "''", "'ü'", "''", "'c''d'", "'x,z'", "'[]'", "ST_GeomFromText('LINESTRING(0 0,1 1)')",
}
local ROW_FLOATS = {
  "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL",
  "'0.000000000000000000000000000001'", "1234.5", "0", "0",
  "16777217", "0.1 + 0.2",
  "NULL", "NULL", "NULL",
  "NULL", "'00:00:00'", "'-00:00:00'", "'00:00:00.000'", "'12:00:00.5'",
  "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "2000",
  "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "NULL", "''", "NULL", "NULL",
}
local MORE_FLOATS = { -- (f, db) pairs, one row each
  { "1e-7", "1e-7" }, { "123456789", "1234567890123456789" }, { "1.17549e-38", "2.2250738585072014e-308" },
  { "-0.5", "5e-324" }, { "100", "1e15" }, { "1234567", "1e16" }, { "0.333333333", "123456789012345.67" },
  { "9.99999e-5", "1.2345678901234567e-14" }, { "-1.5e10", "-9.87654321e-100" }, { "3.4e-5", "1e100" },
}

local function col_list()
  local t = {}
  for _, c in ipairs(COLS) do t[#t + 1] = c[1] end
  return t
end

local function text_cols()
  local t = {}
  for _, c in ipairs(COLS) do if c[3] == "str" then t[c[1]] = true end end
  return t
end

local function insert_sql(id, vals)
  return string.format("INSERT INTO t.all_types (id, %s) VALUES (%d, %s)",
    table.concat(col_list(), ", "), id, table.concat(vals, ", "))
end

local function update_sql(id, vals)
  local sets = {}
  for i, c in ipairs(COLS) do sets[#sets + 1] = c[1] .. " = " .. vals[i] end
  return string.format("UPDATE t.all_types SET %s WHERE id = %d", table.concat(sets, ", "), id)
end

local function nulls()
  local t = {}
  for i = 1, #COLS do t[i] = "NULL" end
  return t
end

-- {id -> array of exact text-protocol values (or NULL)} as a utf8mb4 connection
-- receives them: HEX(CONCAT(col)), and HEX(CONVERT(col USING utf8mb4)) for the text
-- columns named in `text` (their bytes are converted from the column's charset).
local function snapshot(srv, tbl, cols, text)
  local sel = {}
  for _, c in ipairs(cols) do
    if text and text[c] then sel[#sel + 1] = "HEX(CONVERT(`" .. c .. "` USING utf8mb4))"
    elseif c == "f" and tbl:find("all", 1, true) then
      -- FLOAT is decoded as its exact value in DOUBLE form (round-trips; the
      -- 6-digit text form does not), the same as the snapshot source reads it
      sel[#sel + 1] = "HEX(CONCAT(CAST(`f` AS DOUBLE)))"
    else sel[#sel + 1] = "HEX(CONCAT(`" .. c .. "`))" end
  end
  local rows = srv:rows("SELECT id, " .. table.concat(sel, ", ") .. " FROM " .. tbl .. " ORDER BY id")
  local out = {}
  for _, r in ipairs(rows) do
    local v = {}
    for i = 2, #r do v[i - 1] = r[i] == NULL and NULL or unhex(r[i]) end
    out[tonumber(r[1])] = v
  end
  return out
end

-- compare a decoded image (array incl. id first) against a snapshot row; returns values compared
local function compare(what, cols, image, expect)
  assert(image, what .. ": image missing")
  local n = 0
  for i, c in ipairs(cols) do
    local got, want = image[i + 1], expect[i]
    if got ~= want then
      error(string.format("%s: column %s: binlog %s, SELECT %s", what, c, show(got), show(want)), 2)
    end
    n = n + 1
  end
  return n
end

local function all_types_statements()
  local stmts = {
    "CREATE TABLE t.all_types (id INT NOT NULL PRIMARY KEY, " .. (function()
      local d = {}
      for _, c in ipairs(COLS) do d[#d + 1] = c[1] .. " " .. c[2] end
      return table.concat(d, ", ")
    end)() .. ") ENGINE=InnoDB",
    insert_sql(1, ROW_MIN), insert_sql(2, ROW_MAX), insert_sql(3, ROW_MISC), insert_sql(4, nulls()),
    insert_sql(5, ROW_FLOATS),
  }
  for k, p in ipairs(MORE_FLOATS) do
    local v = nulls()
    v[15], v[16] = p[1], p[2]
    stmts[#stmts + 1] = insert_sql(100 + k, v)
  end
  return stmts
end

-- Runs the insert / update / delete scenario on srv and checks every value of the
-- decoded stream against SELECT. Returns the number of values compared.
local function run_all_types(srv, stream_opts)
  srv:sql("CREATE DATABASE IF NOT EXISTS t")
  srv:sql("DROP TABLE IF EXISTS t.all_types")
  local file, pos = master_status(srv)
  for _, sql in ipairs(all_types_statements()) do srv:sql(sql) end
  local cols = col_list()
  local snap_ins = snapshot(srv, "t.all_types", cols, text_cols())

  -- updates: NULL -> values, values -> NULL, a few changes; then deletes
  srv:sql(update_sql(4, ROW_MAX))
  srv:sql(update_sql(1, nulls()))
  srv:sql("UPDATE t.all_types SET tm = '-00:00:01.5', d = '-12345.678', f = -0.5, b64 = b'101', " ..
          "e = 'c''d', st = 'y', c = 'x', bn = 'z', y = 1999 WHERE id = 2")
  srv:sql("UPDATE t.all_types SET db = db * 2 WHERE id > 100")   -- one statement, many rows
  local snap_upd = snapshot(srv, "t.all_types", cols, text_cols())
  srv:sql("DELETE FROM t.all_types WHERE id IN (3, 5) OR id > 105")

  local s = assert(open(srv, { file = file, pos = pos }))
  local events, rows = drain(srv, s, stream_opts)
  s:close()
  local create = all_types_statements()[1]
  local ddl
  for _, ev in ipairs(events) do if ev.type == "ddl" then ddl = ev end end
  assert.equal(create, ddl.sql) -- compressed QUERY events too (log_bin_compress)

  local n, i = 0, 1
  local function nxt(op)
    local r = rows[i]
    assert(r, "missing row " .. i)
    assert.equal("all_types", r.table)
    assert.equal(op, r.op)
    i = i + 1
    return r
  end
  -- names and classes of the batch columns
  local want_cols = { { name = "id", class = "num" } }
  for _, c in ipairs(COLS) do want_cols[#want_cols + 1] = { name = c[1], class = c[3] } end
  local got_cols = {}
  for k, c in ipairs(rows[1].columns) do got_cols[k] = { name = c.name, class = c.class } end
  assert.same(want_cols, got_cols)
  local inserted = { 1, 2, 3, 4, 5 }
  for k = 1, #MORE_FLOATS do inserted[#inserted + 1] = 100 + k end
  for _, id in ipairs(inserted) do
    local r = nxt("insert")
    assert.equal(tostring(id), r.after[1])
    n = n + compare("insert id=" .. id, cols, r.after, snap_ins[id])
  end
  for _, id in ipairs({ 4, 1, 2 }) do
    local r = nxt("update")
    assert.equal(tostring(id), r.after[1])
    n = n + compare("update id=" .. id .. " before", cols, r.before, snap_ins[id])
    n = n + compare("update id=" .. id .. " after", cols, r.after, snap_upd[id])
  end
  for k = 1, #MORE_FLOATS do
    local id = 100 + k
    local r = nxt("update")
    n = n + compare("update id=" .. id .. " before", cols, r.before, snap_ins[id])
    n = n + compare("update id=" .. id .. " after", cols, r.after, snap_upd[id])
  end
  local deleted = { 3, 5 }
  for k = 6, #MORE_FLOATS do deleted[#deleted + 1] = 100 + k end
  for _, id in ipairs(deleted) do
    local r = nxt("delete")
    assert.equal(tostring(id), r.before[1])
    assert.is_nil(r.after)
    n = n + compare("delete id=" .. id, cols, r.before, snap_upd[id])
  end
  assert.equal(#rows, i - 1)
  return n
end

---------------------------------------------------------------------------

mdb.describe("mocdc.binlog with MariaDB", function()
  local full, nolog, comp

  setup(function()
    full = mdb.start{ name = "binlog-full", binlog = true,
                      extra = { "binlog-row-metadata=FULL", "default-time-zone=+00:00" } }
    nolog = mdb.start{ name = "binlog-nolog", binlog = true, extra = { "default-time-zone=+00:00" } }
    comp = mdb.start{ name = "binlog-compressed", binlog = true,
                      extra = { "binlog-row-metadata=FULL", "default-time-zone=+00:00", "log-bin-compress=ON",
                                "log-bin-compress-min-len=10" } }
    for _, srv in ipairs({ full, nolog, comp }) do srv:sql("CREATE DATABASE t") end
  end)

  describe("every column type equals SELECT over the text protocol", function()
    it("with column names and value lists from the table map (binlog_row_metadata=FULL)", function()
      local n = run_all_types(full, {})
      print(string.format("\n  binlog_row_metadata=FULL: %d values compared with SELECT, all equal", n))
    end)

    it("with the schema from set_schema (binlog_row_metadata=NO_LOG: need_schema first)", function()
      local n = run_all_types(nolog, { schema_on_need = true })
      print(string.format("\n  binlog_row_metadata=NO_LOG + set_schema: %d values compared, all equal", n))
    end)

    it("with compressed row events (log_bin_compress=ON, MariaDB types 166-168)", function()
      local n = run_all_types(comp, {})
      print(string.format("\n  compressed events: %d values compared, all equal", n))
    end)

    it("matches mariadb-binlog -vv for an all-integer table (no string metadata) and signed small ints", function()
      for _, srv in ipairs({ full, nolog }) do
        srv:sql("DROP TABLE IF EXISTS t.ints")
        srv:sql("CREATE TABLE t.ints (id INT PRIMARY KEY, a TINYINT, b SMALLINT UNSIGNED, c INT, " ..
                "d BIGINT UNSIGNED, e DATE, f YEAR, g MEDIUMINT, h TINYINT UNSIGNED, k BIGINT)")
        local file, pos = master_status(srv)
        srv:sql("INSERT INTO t.ints VALUES (1, -128, 65535, -2147483648, 18446744073709551615, '2000-01-01', " ..
                "0, -8388608, 255, -9223372036854775808), (2, -1, 0, -1, 9223372036854775808, '1000-01-01', " ..
                "1901, -1, 128, -1), (3, 127, 32768, 2147483647, 0, '9999-12-31', 2155, 8388607, 0, 1), " ..
                "(4, -100, 40000, -30000, 1, NULL, NULL, -8000000, 200, -42)")
        local cols = { "a", "b", "c", "d", "e", "f", "g", "h", "k" }
        local snap = snapshot(srv, "t.ints", cols)
        local s = assert(open(srv, { file = file, pos = pos }))
        local _, rows = drain(srv, s, { schema_on_need = srv == nolog })
        s:close()
        assert.equal(4, #rows)
        for _, r in ipairs(rows) do compare("ints id=" .. r.after[1], cols, r.after, snap[tonumber(r.after[1])]) end

        -- cross-check with mariadb-binlog: it prints "signed (unsigned)" for negatives
        local out = io.popen("mariadb-binlog --no-defaults --base64-output=decode-rows -vv --start-position=" ..
                             pos .. " " .. srv.datadir .. "/" .. file .. " 2>&1"):read("*a")
        local seen = 0
        for _, r in ipairs(rows) do
          for k, c in ipairs(cols) do
            local v = r.after[k + 1]
            if v ~= NULL and c ~= "e" then
              local pat = "@" .. (k + 1) .. "=" .. v:gsub("%-", "%%-") .. " "
              local upat = "%(" .. v .. "%)"
              if c ~= "f" then
                assert(out:find(pat) or out:find(upat), "mariadb-binlog disagrees on " .. c .. "=" .. v)
                seen = seen + 1
              end
            end
          end
        end
        assert.is_true(seen >= 28)
      end
    end)

    it("converts text in other charsets to utf8mb4 as a utf8mb4 SELECT does", function()
      local cols = { "l1", "l2", "l3", "c1", "g", "u16", "uc", "sj", "l2c", "e", "st", "u8" }
      local text = {}
      for _, c in ipairs(cols) do text[c] = true end
      for _, srv in ipairs({ full, nolog }) do
        srv:sql("DROP TABLE IF EXISTS t.cs")
        srv:sql("CREATE TABLE t.cs (id INT PRIMARY KEY, l1 VARCHAR(20) CHARACTER SET latin1, " ..
          "l2 CHAR(10) CHARACTER SET latin1, l3 TEXT CHARACTER SET latin1, c1 VARCHAR(20) CHARACTER SET cp1251, " ..
          "g VARCHAR(20) CHARACTER SET gbk, u16 VARCHAR(20) CHARACTER SET utf16, uc CHAR(10) CHARACTER SET ucs2, " ..
          "sj VARCHAR(10) CHARACTER SET sjis, l2c VARCHAR(10) CHARACTER SET latin2, " ..
          "e ENUM('é','ü','€') CHARACTER SET latin1, st SET('à','ß','x') CHARACTER SET latin1, " ..
          "u8 VARCHAR(10) CHARACTER SET utf8mb3) DEFAULT CHARSET=latin1")
        local file, pos = master_status(srv)
        srv:sql("INSERT INTO t.cs VALUES (1, 'café €', 'naïve  ', X'8081FF9D20', 'Привет', '中文', '😀 emoji', " ..
          "'Ωmega', '日本', 'Łódź', 'é', 'à,ß', 'ok'), (2, '', '', '', '', '', '', '', '', '', '€', '', ''), " ..
          "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)")
        local snap_ins = snapshot(srv, "t.cs", cols, text)
        srv:sql("UPDATE t.cs SET l1 = 'über', e = 'ü', st = 'x,ß', g = NULL, uc = 'a' WHERE id = 1")
        local snap_upd = snapshot(srv, "t.cs", cols, text)
        local s = assert(open(srv, { file = file, pos = pos }))
        local _, rows = drain(srv, s, { schema_on_need = srv == nolog })
        s:close()
        assert.equal(4, #rows)
        for k = 1, 3 do compare("cs insert " .. k, cols, rows[k].after, snap_ins[k]) end
        compare("cs update before", cols, rows[4].before, snap_ins[1])
        compare("cs update after", cols, rows[4].after, snap_upd[1])
        assert.equal("café €", rows[1].after[2])
        assert.equal("Привет", rows[1].after[5])
      end
    end)

    it("FLOAT(M,D)/DOUBLE(M,D) decimals and ZEROFILL come from set_schema", function()
      full:sql("CREATE TABLE t.fmt (id INT PRIMARY KEY, a FLOAT(7,2), b DOUBLE(12,4), c INT(6) UNSIGNED ZEROFILL, " ..
               "d DECIMAL(5,2) ZEROFILL)")
      local file, pos = master_status(full)
      full:sql("INSERT INTO t.fmt VALUES (1, 3.1, 2.5, 42, 1.5), (2, -12345.67, 1e6, 0, 0), " ..
               "(3, 0, -0.0001, 999999, 999.99)")
      local cols = { "a", "b", "c", "d" }
      local snap = snapshot(full, "t.fmt", cols)
      local s = assert(open(full, { file = file, pos = pos }))
      local _, rows = drain(full, s, { on_table = function(st, ev)
        if ev.table == "fmt" then
          st:set_schema(ev.db, ev.table, binlog.schema_columns(schema_conn(full), ev.db, ev.table))
        end
      end })
      s:close()
      assert.equal(3, #rows)
      for _, r in ipairs(rows) do compare("fmt id=" .. r.after[1], cols, r.after, snap[tonumber(r.after[1])]) end
    end)

    it("decodes pre-10.1 TIME/DATETIME/TIMESTAMP, and names the fractional ones it cannot read", function()
      full:sql("SET GLOBAL mysql56_temporal_format = OFF")
      full:sql("CREATE TABLE t.old0 (id INT PRIMARY KEY, a TIME, b DATETIME, c TIMESTAMP NULL)")
      full:sql("CREATE TABLE t.old3 (id INT PRIMARY KEY, a TIME(3))")
      full:sql("SET GLOBAL mysql56_temporal_format = ON")
      local file, pos = master_status(full)
      full:sql("INSERT INTO t.old0 VALUES (1, '-838:59:59', '1000-01-01 00:00:00', '1970-01-01 00:00:01'), " ..
               "(2, '12:34:56', '9999-12-31 23:59:59', '2038-01-19 03:14:07'), (3, '-00:00:01', NULL, NULL)")
      local cols = { "a", "b", "c" }
      local snap = snapshot(full, "t.old0", cols)
      local s = assert(open(full, { file = file, pos = pos }))
      local _, rows = drain(full, s)
      s:close()
      assert.equal(3, #rows)
      for _, r in ipairs(rows) do compare("old0 id=" .. r.after[1], cols, r.after, snap[tonumber(r.after[1])]) end

      file, pos = master_status(full)
      full:sql("INSERT INTO t.old3 VALUES (1, '-01:02:03.456')")
      s = assert(open(full, { file = file, pos = pos }))
      local err
      while true do
        local ev, m = s:next()
        if not ev then err = m break end
      end
      s:close()
      assert.truthy(err and err:find("pre-10.1 MariaDB format", 1, true), err)
    end)

    it("renders TIMESTAMP in UTC whatever the writer's time zone", function()
      full:sql("CREATE TABLE t.tz (id INT PRIMARY KEY, ts TIMESTAMP(3) NULL)")
      local file, pos = master_status(full)
      full:sql("SET time_zone = '+05:00'; INSERT INTO t.tz VALUES (1, '2020-01-01 05:00:00.123')")
      local s = assert(open(full, { file = file, pos = pos }))
      local _, rows = drain(full, s)
      s:close()
      assert.equal("2020-01-01 00:00:00.123", rows[1].after[2])
    end)
  end)

  describe("stream events", function()
    it("reports table, gtid, ddl and commit events with positions, and skips unwanted tables undecoded", function()
      local file, pos = master_status(full)
      full:sql("CREATE TABLE t.ev (id INT PRIMARY KEY, v VARCHAR(10)); CREATE DATABASE other; " ..
               "CREATE TABLE other.x (id INT PRIMARY KEY)")
      full:sql("BEGIN; INSERT INTO other.x VALUES (1); INSERT INTO t.ev VALUES (1, 'a'), (2, 'b'); " ..
               "INSERT INTO other.x VALUES (2); UPDATE t.ev SET v = 'c' WHERE id = 1; COMMIT")
      local s = assert(open(full, { file = file, pos = pos }))
      local events, rows = drain(full, s)
      local types = {}
      for _, ev in ipairs(events) do types[#types + 1] = ev.type end
      local ddl = {}
      for _, ev in ipairs(events) do if ev.type == "ddl" then ddl[#ddl + 1] = ev.sql end end
      assert.same({ "CREATE TABLE t.ev (id INT PRIMARY KEY, v VARCHAR(10))", "CREATE DATABASE other",
                    "CREATE TABLE other.x (id INT PRIMARY KEY)" }, ddl)
      -- rows of other.x are skipped undecoded; both statements on t.ev arrive in one batch
      assert.equal(3, #rows)
      assert.same({ "1", "a" }, rows[1].after)
      assert.same({ "1", "a" }, rows[3].before)
      assert.same({ "1", "c" }, rows[3].after)
      local commit, gtid
      for _, ev in ipairs(events) do
        if ev.type == "commit" then commit = ev end
        if ev.type == "gtid" then gtid = ev end
      end
      assert.truthy(gtid.gtid:match("^0%-%d+%-%d+$"))
      assert.is_number(commit.xid)
      local f2, p2 = master_status(full)
      assert.equal(f2, commit.file)
      assert.equal(p2, commit.pos)
      assert.same({ f2, p2 }, { s:position() })
      s:close()
      s:close() -- idempotent
      assert.has_error(function() s:next() end, "binlog stream is closed")
    end)

    it("starts at a MariaDB GTID", function()
      full:sql("CREATE TABLE t.g (id INT PRIMARY KEY)")
      full:sql("INSERT INTO t.g VALUES (1)")
      local gtid = full:rows("SELECT @@gtid_binlog_pos")[1][1]
      full:sql("INSERT INTO t.g VALUES (2)")
      local s = assert(open(full, { gtid = gtid }))
      local events, rows = drain(full, s)
      s:close()
      assert.equal(1, #rows)
      assert.same({ "2" }, rows[1].after)
      local first
      for _, ev in ipairs(events) do if ev.type == "gtid" then first = first or ev end end
      local d, sv, seq = gtid:match("^(%d+)%-(%d+)%-(%d+)$")
      assert.equal(d .. "-" .. sv .. "-" .. (tonumber(seq) + 1), first.gtid)
    end)

    it("asks again for the schema after a DDL when the source logs no column names", function()
      nolog:sql("CREATE TABLE t.alt (id INT PRIMARY KEY, a INT UNSIGNED)")
      local file, pos = master_status(nolog)
      nolog:sql("INSERT INTO t.alt VALUES (1, 4294967295)")
      nolog:sql("ALTER TABLE t.alt ADD COLUMN b VARCHAR(10)")
      nolog:sql("INSERT INTO t.alt VALUES (2, 2, 'x')")
      local s = assert(open(nolog, { file = file, pos = pos }))
      local asked, rows = {}, {}
      local schema = {
        [2] = { { name = "id" }, { name = "a", unsigned = true } },
        [3] = { { name = "id" }, { name = "a", unsigned = true }, { name = "b", class = "str" } },
      }
      while true do
        local ev, err = s:next()
        if not ev then assert.is_nil(err) break end
        if ev.type == "need_schema" then
          asked[#asked + 1] = ev.columns
          s:set_schema(ev.db, ev.table, schema[ev.columns])
        elseif ev.type == "rows" then
          local _, _, after = ev.batch:get(1)
          rows[#rows + 1] = after
          ev.batch:free()
        end
      end
      s:close()
      assert.same({ 2, 3 }, asked)
      assert.same({ { "1", "4294967295" }, { "2", "2", "x" } }, rows)
    end)

    it("ROTATE: FLUSH BINARY LOGS mid-stream continues into the next file", function()
      full:sql("CREATE TABLE t.rot (id INT PRIMARY KEY)")
      local file, pos = master_status(full)
      full:sql("INSERT INTO t.rot VALUES (1); FLUSH BINARY LOGS; INSERT INTO t.rot VALUES (2)")
      local file2 = master_status(full)
      assert.are_not.equal(file, file2)
      local s = assert(open(full, { file = file, pos = pos }))
      local events, rows = drain(full, s)
      s:close()
      local rotate
      for _, ev in ipairs(events) do
        if ev.type == "rotate" and not ev.artificial then rotate = ev end
      end
      assert.same({ type = "rotate", file = file2, pos = 4 }, rotate)
      assert.equal(2, #rows)
      assert.same({ "2" }, rows[2].after)
      local last = events[#events]
      assert.equal("commit", last.type)
      assert.equal(file2, last.file)
    end)

    it("delivers heartbeats on an idle source (blocking mode)", function()
      local file, pos = master_status(full)
      local s = assert(open(full, { file = file, pos = pos, blocking = true, heartbeat = 0.2 }))
      local t0 = util.mono()
      local hb
      for _ = 1, 20 do
        local ev = assert(s:next())
        if ev.type == "heartbeat" then hb = ev break end
      end
      local dt = util.mono() - t0
      s:close()
      assert.truthy(hb, "no heartbeat")
      assert.equal(file, hb.file)
      assert.equal(pos, hb.pos)
      assert.is_true(dt < 3, "first heartbeat after " .. dt .. " s")
    end)

    it("readable() tells an idle source from pending events", function()
      full:sql("CREATE TABLE t.rd (id INT PRIMARY KEY)")
      local file, pos = master_status(full)
      local s = assert(open(full, { file = file, pos = pos, blocking = true, heartbeat = 5 }))
      assert.equal("rotate", s:next().type)      -- the source's fake ROTATE at connect
      assert.is_true(s:readable(5))              -- the FORMAT_DESCRIPTION that follows it
      full:sql("INSERT INTO t.rd VALUES (1)")
      local ev = assert(s:next())
      while ev.type ~= "commit" do ev = assert(s:next()) end
      assert.is_false(s:readable(0))             -- idle: next() would wait
      local t0 = util.mono()
      assert.is_false(s:readable(0.2))
      assert.is_true(util.mono() - t0 >= 0.15)
      full:sql("INSERT INTO t.rd VALUES (2)")
      assert.is_true(s:readable(5))
      assert.equal("gtid", s:next().type)
      s:close()
    end)

    it("returns nil (and no error) at the end in non-blocking mode, again on later calls", function()
      local file, pos = master_status(full)
      local s = assert(open(full, { file = file, pos = pos }))
      local n = 0
      while true do
        local ev, err = s:next()
        if not ev then assert.is_nil(err) break end
        n = n + 1
      end
      local ev, err = s:next()
      assert.is_nil(ev)
      assert.is_nil(err)
      s:close()
    end)

    it("splits a big transaction into batches of max_rows", function()
      full:sql("CREATE TABLE t.split (id INT PRIMARY KEY)")
      local file, pos = master_status(full)
      full:sql("INSERT INTO t.split SELECT seq FROM t.seq_1_to_2500")
      local s = assert(open(full, { file = file, pos = pos }))
      local sizes, more = {}, {}
      while true do
        local ev = s:next(1000)
        if not ev then break end
        if ev.type == "table" then s:want(ev.db, ev.table, true) end
        if ev.type == "rows" then
          sizes[#sizes + 1] = ev.batch:count()
          more[#more + 1] = ev.more or false
          ev.batch:free()
        end
      end
      s:close()
      assert.same({ 1000, 1000, 500 }, sizes)
    end)
  end)

  describe("errors", function()
    it("names a purged start file (errno 1236)", function()
      full:sql("FLUSH BINARY LOGS")
      local old = master_status(full)
      full:sql("FLUSH BINARY LOGS")
      local cur = master_status(full)
      full:sql("PURGE BINARY LOGS TO '" .. cur .. "'")
      -- the source keeps a log until its binlog checkpoint passed it: retry the purge
      for _ = 1, 100 do
        full:sql("PURGE BINARY LOGS TO '" .. cur .. "'")
        if full:rows("SHOW BINARY LOGS")[1][1] == cur then break end
        util.sleep(0.05)
      end
      local s, msg, errno = open(full, { file = old, pos = 4 })
      assert.is_nil(s)
      assert.equal(1236, errno)
      assert.equal(string.format("binlog file '%s' is no longer on source 127.0.0.1:%d (purged; the oldest " ..
        "binlog there is '%s'): the saved position %s:4 cannot be resumed; start over from a new snapshot",
        old, full.port, cur, old), msg)
    end)

    it("refuses binlog_format=STATEMENT and binlog_row_image=MINIMAL with the fix", function()
      nolog:sql("SET GLOBAL binlog_format = 'STATEMENT'")
      local s, msg = open(nolog)
      nolog:sql("SET GLOBAL binlog_format = 'ROW'")
      assert.is_nil(s)
      assert.equal(string.format("source 127.0.0.1:%d has binlog_format=STATEMENT; mocdc needs binlog_format=ROW " ..
        "(SET GLOBAL binlog_format=ROW, or binlog_format=ROW in my.cnf)", nolog.port), msg)

      nolog:sql("SET GLOBAL binlog_row_image = 'MINIMAL'")
      s, msg = open(nolog)
      nolog:sql("SET GLOBAL binlog_row_image = 'FULL'")
      assert.is_nil(s)
      assert.equal(string.format("source 127.0.0.1:%d has binlog_row_image=MINIMAL; mocdc needs " ..
        "binlog_row_image=FULL (SET GLOBAL binlog_row_image=FULL, or binlog_row_image=FULL in my.cnf)",
        nolog.port), msg)
    end)

    it("refuses a source without the binary log", function()
      local plain = mdb.start{ name = "binlog-off" }
      local s, msg = open(plain)
      plain:stop()
      assert.is_nil(s)
      assert.equal(string.format("source 127.0.0.1:%d has log_bin=OFF; mocdc needs the binary log (log_bin=ON, " ..
        "binlog_format=ROW and binlog_row_image=FULL in my.cnf, then restart the server)", plain.port), msg)
    end)

    it("names a server_id clash when another reader takes over the id", function()
      local a = assert(open(full, { blocking = true, heartbeat = 0.2, server_id = 4242 }))
      assert(a:next())
      local b = assert(open(full, { blocking = true, heartbeat = 0.2, server_id = 4242 }))
      assert(b:next())
      local msg, errno
      for _ = 1, 50 do
        local ev, m, e = a:next()
        if not ev then msg, errno = m, e break end
      end
      a:close()
      b:close()
      assert.is_number(errno)
      assert.truthy(msg:find(string.format("another replica connected to source 127.0.0.1:%d with the same " ..
        "server_id 4242, and the source dropped this binlog stream; give every mocdc pipeline and replica a " ..
        "unique server_id", full.port), 1, true), msg)
    end)

    it("names the missing privilege", function()
      full:sql("CREATE USER 'norepl'@'%' IDENTIFIED BY 'pw'")
      local hint = "(on MariaDB: GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO ...; on MySQL: " ..
                   "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO ...)"
      local s, msg = open(full, { user = "norepl", password = "pw" })
      assert.is_nil(s)
      assert.truthy(msg:find("^user 'norepl' may not read the binlog position of source 127%.0%.0%.1:%d+: "), msg)
      assert.truthy(msg:find(hint, 1, true), msg)
      -- refused when it registers as a replica (COM_REGISTER_SLAVE), before any event
      local file, pos = master_status(full)
      local ev, err, errno = open(full, { user = "norepl", password = "pw", file = file, pos = pos })
      assert.is_nil(ev)
      assert.equal(1045, errno) -- what Connector/C 3.3 reports for the refused registration
      assert.truthy(err:find("REPLICATION SLAVE privilege", 1, true), err)
      assert.truthy(err:find("^user 'norepl' may not read the binlog of source 127%.0%.0%.1:%d+: "), err)
      assert.truthy(err:find(hint, 1, true), err)
    end)

    it("refuses the source's own server_id and a missing server_id", function()
      local s, msg = open(full, { server_id = full.server_id })
      assert.is_nil(s)
      assert.equal(string.format("server_id %d is the server_id of source 127.0.0.1:%d itself; pick another " ..
        "server_id for mocdc (unique among the source's replicas)", full.server_id, full.port), msg)
      assert.has_error(function() require("mocdc.binlog.lib").open{ host = "127.0.0.1", port = full.port } end,
        "binlog.open: server_id must be a number in 1..4294967295, unique among the source's replicas")
    end)

    it("reports need_schema once, then an error when set_schema never comes", function()
      nolog:sql("CREATE TABLE t.ns (id INT PRIMARY KEY)")
      local file, pos = master_status(nolog)
      nolog:sql("INSERT INTO t.ns VALUES (1)")
      local s = assert(open(nolog, { file = file, pos = pos }))
      local need, err
      while true do
        local ev, m = s:next()
        if not ev then err = m break end
        if ev.type == "need_schema" then need = ev end
      end
      s:close()
      assert.same({ type = "need_schema", db = "t", table = "ns", columns = 1 }, need)
      assert.equal("no column names for `t`.`ns`: the source does not log them (binlog_row_metadata=FULL is off) " ..
                   "and set_schema() was not called after need_schema", err)
    end)
  end)

  describe("memory and speed", function()
    it("streams a 1,000,000-row transaction with bounded memory", function()
      full:sql("CREATE TABLE t.big (id INT PRIMARY KEY, v VARCHAR(100))")
      local file, pos = master_status(full)
      local t0 = util.mono()
      full:sql("INSERT INTO t.big SELECT seq, REPEAT('x', 100) FROM t.seq_1_to_1000000")
      local t_insert = util.mono() - t0
      collectgarbage()
      local rss0 = util.peak_rss_kb()
      local s = assert(open(full, { file = file, pos = pos }))
      t0 = util.mono()
      local n, batches = 0, 0
      while true do
        local ev, err = s:next(10000)
        if not ev then assert(not err, err) break end
        if ev.type == "table" then s:want(ev.db, ev.table, true) end
        if ev.type == "rows" then
          n = n + ev.batch:count()
          batches = batches + 1
          ev.batch:free()
        end
      end
      local dt = util.mono() - t0
      s:close()
      local rss1 = util.peak_rss_kb()
      print(string.format("\n  1,000,000-row transaction: insert %.1f s; streamed in %d batches in %.2f s " ..
        "(%.0f rows/s); peak RSS %d KB before, %d KB after (+%d KB)", t_insert, batches, dt, n / dt, rss0, rss1,
        rss1 - rss0))
      assert.equal(1000000, n)
      assert.is_true(under_asan() or rss1 - rss0 < 64 * 1024, "peak RSS grew by " .. (rss1 - rss0) .. " KB")

      -- again, dropping the batches without batch:free(): the stream tells the
      -- collector about their native memory, so they do not pile up either
      s = assert(open(full, { file = file, pos = pos }))
      n = 0
      while true do
        local ev = s:next(10000)
        if not ev then break end
        if ev.type == "table" then s:want(ev.db, ev.table, true) end
        if ev.type == "rows" then n = n + ev.batch:count() end
      end
      s:close()
      local rss2 = util.peak_rss_kb()
      print(string.format("  without batch:free(): peak RSS %d KB (+%d KB)", rss2, rss2 - rss0))
      assert.equal(1000000, n)
      assert.is_true(under_asan() or rss2 - rss0 < 64 * 1024, "peak RSS grew by " .. (rss2 - rss0) .. " KB")
    end)

    it("decodes 500,000 inserts to a 5-column table (throughput)", function()
      full:sql("CREATE TABLE t.tp (id INT PRIMARY KEY, a BIGINT, b VARCHAR(32), c DOUBLE, d DATETIME)")
      local file, pos = master_status(full)
      for k = 0, 9 do
        full:sql(string.format("INSERT INTO t.tp SELECT seq, seq * 1000, CONCAT('name-', seq), seq / 7, " ..
          "'2024-01-01 00:00:00' + INTERVAL seq SECOND FROM t.seq_%d_to_%d", k * 50000 + 1, (k + 1) * 50000))
      end
      local endfile = master_status(full)
      -- every row arrives once, in order, decoded: the first and last row of each batch are
      -- checked in full (checking all of them would measure Lua, not the decoder)
      local function expect_row(row, id)
        assert.same({ tostring(id), tostring(id * 1000), "name-" .. id },
          { row[1], row[2], row[3] })
        assert.is_true(math.abs(tonumber(row[4]) - id / 7) < 1e-6 * id, row[4] .. " for id " .. id)
      end
      local function decode()
        local s = assert(open(full, { file = file, pos = pos }))
        local t0 = util.mono()
        local n = 0
        while true do
          local ev, err = s:next(10000)
          if not ev then assert.is_nil(err) break end
          if ev.type == "table" then s:want(ev.db, ev.table, true) end
          if ev.type == "rows" then
            local c = ev.batch:count()
            local _, _, first = ev.batch:get(1)
            local _, _, last = ev.batch:get(c)
            expect_row(first, n + 1)
            expect_row(last, n + c)
            n = n + c
            ev.batch:free()
          end
        end
        local dt = util.mono() - t0
        s:close()
        return n, dt
      end
      local function tool()
        local t0 = util.mono()
        local ok = os.execute("mariadb-binlog --no-defaults --base64-output=decode-rows -vv --start-position=" .. pos ..
          " " .. full.datadir .. "/" .. endfile .. " >/dev/null 2>&1")
        assert.is_true(ok == 0 or ok == true, "mariadb-binlog failed")
        return util.mono() - t0
      end
      -- best of two runs each, side by side, so load on the machine weighs on both
      local n, dt = decode()
      assert.equal(500000, n)
      local dt2 = tool()
      local n2, dt3 = decode()
      assert.equal(500000, n2)
      dt, dt2 = math.min(dt, dt3), math.min(dt2, tool())
      print(string.format("\n  throughput: %d rows in %.2f s = %.0f rows/s (mariadb-binlog -vv on the same " ..
        "file: %.2f s = %.0f rows/s)", n, dt, n / dt, dt2, n / dt2))
      -- mocdc decodes ~1.6x as fast as mariadb-binlog -vv prints; more than twice as slow is a regression
      assert.is_true(dt < 2 * dt2, string.format("decoding took %.2f s, mariadb-binlog -vv %.2f s", dt, dt2))
    end)
  end)
end)
