-- mocdc.conn against real throwaway MariaDB servers: session setup, result
-- classes, streaming with bounded memory, the LOAD DATA LOCAL copy path (exact
-- bytes, BIT(64), chunking, source/sink failures), handle life cycle and the
-- exact one-line messages for wrong password / unreachable port / bad URI.
local conn = require("mocdc.conn")
local lib = require("mocdc.conn.lib")
local batch = require("mocdc.batch.lib")
local util = require("mocdc.util.lib")
local mdb = require("spec.helpers.mariadb")

local NULL = lib.NULL
local LOAD = "LOAD DATA LOCAL INFILE 'mocdc://stream' INTO TABLE %s CHARACTER SET binary %s"

mdb.describe("mocdc.conn with MariaDB", function()
  local src, dst -- servers
  local s, d     -- connections

  setup(function()
    src = mdb.start{ name = "conn-src", extra = { "sql_mode=NO_BACKSLASH_ESCAPES,NO_ENGINE_SUBSTITUTION" } }
    dst = mdb.start{ name = "conn-dst" }
    s = assert(conn.open(src.uri, { role = "source" }))
    d = assert(conn.open(dst.uri, { role = "sink", local_infile = true }))
    src:sql("CREATE DATABASE t")
    dst:sql("CREATE DATABASE t")
  end)

  teardown(function()
    if s then s:close() end
    if d then d:close() end
  end)

  it("send() then reap_query() / reap(): one statement in flight, nothing else on the conn meanwhile", function()
    local c = assert(conn.open(src.uri))
    assert.is_true(c:send("SELECT 41 + 1"))
    -- while it is in flight: every other statement is refused, nothing is mixed up
    local r, err, code = c:query("SELECT 2")
    assert.is_nil(r)
    assert.matches("is busy: a statement sent with send%(%) is in flight %(reap it first%)", err)
    assert.equals(2014, code)
    assert.is_nil((c:send("SELECT 3")))
    assert.same({ { "42" } }, (c:reap_query()))
    -- nothing in flight: reap fails at once instead of waiting for a result
    local r2, err2 = c:reap_query()
    assert.is_nil(r2)
    assert.matches("no statement in flight", err2)
    assert.is_nil((c:reap()))
    -- an error travels back through reap_query, and the conn stays usable
    assert.is_true(c:send("SELECT * FROM no_such_db.t"))
    local r3, err3, code3 = c:reap_query()
    assert.is_nil(r3)
    assert.matches("no_such_db", err3)
    assert.equals(1146, code3)
    assert.is_true(c:send("DO 1"))
    assert.equals(0, c:reap())
    assert.same({ { "1" } }, (c:query("SELECT 1")))
    -- two connections at once
    local c2 = assert(conn.open(src.uri))
    assert.is_true(c:send("SELECT SLEEP(60), 1"))
    assert.is_true(c2:send("SELECT SLEEP(60), 2"))
    -- both run at the same time: the server lists both, then they are cut short
    local watch = assert(conn.open(src.uri))
    local ids = require("spec.support.cli").eventually(function()
      local r = watch:query("SELECT id FROM information_schema.processlist WHERE info LIKE 'SELECT SLEEP(60), _'")
      return #r == 2 and r
    end, 20, "both statements running")
    for _, r in ipairs(ids) do assert(watch:exec("KILL QUERY " .. r[1])) end
    watch:close()
    for _, x in ipairs({ c, c2 }) do
      local r, err, code = x:reap_query()
      assert.is_nil(r)
      assert.equals(1317, code, err) -- ER_QUERY_INTERRUPTED
    end
    assert.same({ { "1" } }, (c2:query("SELECT 1")))
    c2:close()
    assert.is_true(c:send("SELECT 1"))
    c:close() -- closing with a statement in flight is fine
    local _, cerr = c:reap_query()
    assert.matches("is closed", cerr)
  end)

  describe("open", function()
    it("detects the flavour and sets up the session", function()
      assert.are.equal("mariadb", s.flavour)
      assert.matches("MariaDB", s:server_info())
      assert.is_true(s:server_version() >= 100000)
      assert.are.equal("+00:00", s:variable("time_zone"))
      assert.are.equal("utf8mb4", s:variable("character_set_client"))
      -- the server runs NO_BACKSLASH_ESCAPES and no strict mode: fixed for our session only
      assert.are.equal("STRICT_TRANS_TABLES,NO_ENGINE_SUBSTITUTION", s:variable("sql_mode"))
      assert.are.equal("NO_BACKSLASH_ESCAPES,NO_ENGINE_SUBSTITUTION", s:query_one("SELECT @@GLOBAL.sql_mode")[1])
      assert.are.equal("3600", s:variable("net_write_timeout")) -- role source
      assert.are.equal(("root@127.0.0.1:%d"):format(src.port), s.who)
      assert.are.equal(("mocdc.conn(sink root@127.0.0.1:%d, mariadb)"):format(dst.port), tostring(d))
    end)

    it("accepts a table and a password from elsewhere", function()
      local c = assert(conn.open({ host = "127.0.0.1", port = src.port, user = "root" },
        { password = src.password, connect_timeout = 2 }))
      assert.are.equal("1", c:query_one("SELECT 1")[1])
      c:close()
      local c2 = assert(conn.open(("mysql://root@127.0.0.1:%d/t"):format(src.port), { password = src.password }))
      assert.are.equal("t", c2:query_one("SELECT DATABASE()")[1])
      c2:close()
    end)

    it("wrong password: one line naming role and user@host:port", function()
      local c, err, errno, sqlstate = conn.open(("mysql://root:wrong@127.0.0.1:%d"):format(dst.port), { role = "sink" })
      assert.is_nil(c)
      assert.are.equal(("cannot connect to sink root@127.0.0.1:%d: Access denied for user 'root'@'127.0.0.1' " ..
        "(using password: YES)"):format(dst.port), err)
      assert.are.equal(1045, errno)
      assert.are.equal("28000", sqlstate)
    end)

    it("unreachable port: one line with the real reason", function()
      local gone = mdb.start{ name = "conn-gone" }
      local port = gone.port
      gone:stop()
      local c, err = conn.open(("mysql://root:pw@127.0.0.1:%d"):format(port), { role = "source" })
      assert.is_nil(c)
      assert.are.equal(("cannot connect to source root@127.0.0.1:%d: Can't connect to server on '127.0.0.1' " ..
        "(111 \"Connection refused\")"):format(port), err)
    end)

    it("malformed URI: one line, password masked", function()
      assert.are.same({ nil, "invalid source URI 'mysql://root:******@127.0.0.1:33o6': port '33o6' is not a number " ..
        "(expected mysql://user:password@host:port[/database])" },
        { conn.open("mysql://root:" .. src.password .. "@127.0.0.1:33o6", { role = "source" }) })
    end)

    it("ssl-mode require fails clearly against a server without TLS", function()
      assert.are.same({ nil, ("cannot connect to sink root@127.0.0.1:%d: ssl-mode require needs TLS, " ..
        "but the server does not offer it"):format(dst.port), 2026, "HY000" },
        { conn.open(dst.uri .. "?ssl-mode=require", { role = "sink" }) })
    end)
  end)

  describe("query", function()
    it("returns rows of strings with NULL, and typed columns", function()
      assert(s:exec([[CREATE TABLE t.types (id INT PRIMARY KEY, u BIGINT UNSIGNED, dc DECIMAL(65,30), f DOUBLE,
        y YEAR, b BIT(10), vc VARCHAR(20), vb VARBINARY(20), bl BLOB, tx TEXT, e ENUM('a','b'), st SET('x','y'),
        j JSON, dt DATE, tm TIME(6), dtm DATETIME(6), ts TIMESTAMP(6) NULL, g GEOMETRY)]]))
      assert.are.equal(1, s:exec([[INSERT INTO t.types VALUES (1, 18446744073709551615,
        '-1.000000000000000000000000000001', 0.5, 2024, b'1000000001', 'é\t', x'00ff', x'5c00', 'x', 'b', 'x,y',
        '[1]', '2024-02-29', '-838:59:59.000000', '2024-01-15 14:30:00.123456', '2038-01-19 03:14:07.999999',
        POINT(1, 2))]]))
      assert.are.equal(1, s:exec("INSERT INTO t.types (id) VALUES (2)"))
      local rows, cols = s:query("SELECT * FROM t.types ORDER BY id")
      local classes, names = {}, {}
      for i, c in ipairs(cols) do classes[i], names[i] = c.class, c.name end
      assert.are.same({ "id", "u", "dc", "f", "y", "b", "vc", "vb", "bl", "tx", "e", "st", "j", "dt", "tm",
        "dtm", "ts", "g" }, names)
      assert.are.same({ "num", "num", "num", "num", "num", "bit", "str", "bin", "bin", "str", "str", "str",
        "str", "str", "str", "str", "str", "bin" }, classes)
      assert.are.equal("types", cols[1].table)
      assert.are.equal("t", cols[1].db)
      assert.are.equal(30, cols[3].decimals)
      assert.are.same({ "1", "18446744073709551615", "-1.000000000000000000000000000001", "0.5", "2024",
        "\2\1", "é\t", "\0\255", "\\\0", "x", "b", "x,y", "[1]", "2024-02-29", "-838:59:59.000000",
        "2024-01-15 14:30:00.123456", "2038-01-19 03:14:07.999999" }, { unpack(rows[1], 1, 17) })
      assert.are.equal(2, #rows)
      for i = 2, #cols do assert.are.equal(NULL, rows[2][i]) end
    end)

    it("returns affected rows and insert id, or nil, msg, errno, sqlstate", function()
      assert(s:exec("CREATE TABLE t.ai (id INT AUTO_INCREMENT PRIMARY KEY, v INT)"))
      assert.are.same({ 2, 1 }, { s:query("INSERT INTO t.ai (v) VALUES (1), (2)") })
      assert.are.same({ 2 }, { s:exec("UPDATE t.ai SET v = v + 1") })
      assert.are.same({ nil, "Table 't.nope' doesn't exist", 1146, "42S02" }, { s:query("SELECT * FROM t.nope") })
      assert.is_nil(s:query_one("SELECT * FROM t.ai WHERE id = 99"))
      assert.are.same({ "1", "2" }, s:query_one("SELECT id, v FROM t.ai ORDER BY id"))
    end)

    it("escape round-trips every byte", function()
      local all = {}
      for i = 0, 255 do all[#all + 1] = string.char(i) end
      local bytes = table.concat(all) .. "'\"\\"
      local row = s:query_one("SELECT HEX('" .. s:escape(bytes) .. "')")
      local hex = bytes:gsub(".", function(ch) return ("%02X"):format(ch:byte()) end)
      assert.are.equal(hex, row[1])
    end)

    it("variable, and schema.table_exists over a connection", function()
      local schema = require("mocdc.schema")
      assert.is_true(schema.table_exists(s, "t", "types"))
      assert.is_false(schema.table_exists(s, "t", "nope"))
      assert.is_false(schema.table_exists(s, "t'x", "a"))
      assert.are.equal("1", s:variable("autocommit"))
      local v, err = s:variable("no_such_var")
      assert.is_nil(v)
      assert.are.equal("Unknown system variable 'no_such_var'", err)
    end)
  end)

  describe("stream", function()
    setup(function()
      src:sql("CREATE TABLE t.big (id INT PRIMARY KEY, pad VARCHAR(600)) " ..
        "SELECT seq AS id, REPEAT(CHAR(65 + seq % 26), 500) AS pad FROM seq_1_to_200000", "t")
    end)

    it("reads 200k rows (~100 MB) into a batch with bounded memory", function()
      local c = assert(conn.open(src.uri, { role = "source" }))
      local cur, cols = assert(c:stream("SELECT id, pad FROM t.big ORDER BY id"))
      assert.are.same({ "num", "str" }, { cols[1].class, cols[2].class })
      local b = batch.new({ { name = "id", class = "num" }, { name = "pad", class = "str" } })
      local before = util.peak_rss_kb()
      local total, last = 0, nil
      while true do
        local n = assert(cur:fetch(b, 5000, 1024 * 1024))
        if n == 0 then break end
        total = total + n
        local _, _, after = b:get(b:count())
        last = after[1]
        b:clear()
      end
      assert.are.equal(200000, total)
      assert.are.equal("200000", last)
      assert.is_true(cur:done())
      local grown = util.peak_rss_kb() - before
      assert.is_true(grown < 32 * 1024, "peak RSS grew by " .. grown .. " KB")
      -- read to the end: the connection is free again without close()
      assert.are.equal("1", c:query_one("SELECT 1")[1])
      c:close()
    end)

    it("a conn with an open cursor refuses other statements clearly", function()
      local c = assert(conn.open(src.uri))
      local cur = assert(c:stream("SELECT id FROM t.big"))
      assert.are.same({ nil, ("connection root@127.0.0.1:%d is busy: a streaming cursor is open on it " ..
        "(read it to the end or close it first)"):format(src.port), 2014 }, { c:query("SELECT 1") })
      assert.are.same({ nil, ("connection root@127.0.0.1:%d is busy: a streaming cursor is open on it " ..
        "(read it to the end or close it first)"):format(src.port), 2014 }, { c:stream("SELECT 1") })
      assert.is_true(cur:close()) -- discards the rest; the conn stays usable
      assert.is_true(cur:close())
      assert.are.equal("2", c:query_one("SELECT 2")[1])
      assert.has_error(function() cur:fetch(batch.new({ { name = "id", class = "num" } }), 1) end,
        "fetch: cursor is closed")
      c:close()
    end)

    it("a cursor keeps its conn alive; dropping it unfinished closes the conn", function()
      local c = assert(conn.open(src.uri))
      local cur = assert(c:stream("SELECT id FROM t.big"))
      local h = c.h
      c = nil
      collectgarbage()
      collectgarbage()
      local b = batch.new({ { name = "id", class = "num" } })
      assert.are.equal(10, cur:fetch(b, 10)) -- the conn was not collected under it
      cur = nil
      collectgarbage()
      collectgarbage()
      assert.are.same({ nil, ("connection root@127.0.0.1:%d is closed: a streaming cursor on it was " ..
        "garbage-collected before it was read to the end"):format(src.port), 2000 }, { h:query("SELECT 1") })
    end)

    it("conn:close() mid-stream is immediate and idempotent", function()
      local c = assert(conn.open(src.uri))
      local cur = assert(c:stream("SELECT * FROM t.big"))
      local t0 = util.mono()
      assert.is_true(c:close())
      assert.is_true(c:close())
      assert.is_true(util.mono() - t0 < 0.5)
      assert.is_false(c:is_open())
      assert.are.same({ nil, ("connection root@127.0.0.1:%d is closed"):format(src.port), 2000 },
        { c:query("SELECT 1") })
      assert.is_true(cur:close())
    end)
  end)

  describe("load_from", function()
    local COLS = "(id INT PRIMARY KEY, s VARCHAR(100) CHARACTER SET utf8mb4, b BLOB, bt BIT(64), big LONGBLOB)"
    local CMP = "SELECT id, HEX(s), HEX(b), CAST(bt AS UNSIGNED), MD5(big), LENGTH(big) FROM t.%s ORDER BY id"

    -- t.wide: 30000 rows on the source, an empty copy on the sink (several specs use it,
    -- in any order)
    setup(function()
      assert(s:exec("CREATE TABLE t.wide (id INT PRIMARY KEY, pad LONGTEXT) " ..
        "SELECT seq AS id, REPEAT('x', 2000) AS pad FROM t.seq_1_to_30000"))
      assert(d:exec("CREATE TABLE t.wide (id INT PRIMARY KEY, pad LONGTEXT)"))
    end)

    local function same_rows(tbl)
      local a, e1 = s:query(CMP:format(tbl))
      local b, e2 = d:query(CMP:format(tbl))
      assert(a, e1)
      assert(b, e2)
      assert.are.same(a, b)
      return #a
    end

    it("copies exact bytes: binary, NULL, tab, newline, backslash, emoji, BIT(64), rows > 4 KiB", function()
      assert(s:exec("CREATE TABLE t.exact " .. COLS))
      assert(d:exec("CREATE TABLE t.exact " .. COLS))
      local all = {}
      for i = 0, 255 do all[#all + 1] = ("%02X"):format(i) end
      assert(s:exec(([[INSERT INTO t.exact VALUES
        (1, 'tab\there', x'%s', b'0', NULL),
        (2, 'new\nline\\ back \\N', x'', 18446744073709551615, NULL),
        (3, '😀 emoji \r cr', NULL, 1, REPEAT('x\t\\', 5000)),
        (4, '', x'5c', NULL, REPEAT(x'00', 10000)),
        (5, '\\N', 'NULL', 9223372036854775808, ''),
        (6, NULL, x'ff0a0d09005c4e', 256, REPEAT(x'5c4e0a', 3000)),
        (7, 'NULL', x'5c', 255, x'5c')]]):format(table.concat(all))))
      local cur, cols = assert(s:stream("SELECT id, s, b, bt, big FROM t.exact ORDER BY id"))
      local sql = conn.load_data_sql("`t`.`exact`", cols)
      local chunks, total = {}, 0
      while true do
        local rows, bytes, key, warnings = d:load_from(cur, sql, { max_rows = 2, key_cols = { 1 } })
        assert(rows, bytes)
        if rows == 0 then break end
        total = total + rows
        assert.are.equal(0, warnings)
        assert.is_true(bytes > 0)
        chunks[#chunks + 1] = key[1]
      end
      assert.are.same({ "2", "4", "6", "7" }, chunks)
      assert.are.equal(7, total)
      assert.are.equal(7, same_rows("exact"))
      assert.are.equal("18446744073709551615", d:query_one("SELECT CAST(bt AS UNSIGNED) FROM t.exact WHERE id = 2")[1])
      -- the exhausted cursor released its connection
      assert.are.equal("1", s:query_one("SELECT 1")[1])
      assert.are.same({ 0, 0, nil, 0 }, { d:load_from(cur, sql, { max_rows = 2 }) })
    end)

    it("returns composite last keys and copies a big table in chunks", function()
      assert(s:exec("CREATE TABLE t.ck (a INT, b VARCHAR(10), v INT, PRIMARY KEY (a, b)) " ..
        "SELECT seq DIV 10 AS a, CONCAT('k', seq % 10) AS b, seq AS v FROM t.seq_1_to_25000"))
      assert(d:exec("CREATE TABLE t.ck (a INT, b VARCHAR(10), v INT, PRIMARY KEY (a, b))"))
      local cur = assert(s:stream("SELECT a, b, v FROM t.ck ORDER BY a, b"))
      local sql = LOAD:format("t.ck", "")
      local keys, n = {}, 0
      while true do
        local rows, _, key = assert(d:load_from(cur, sql, { max_rows = 10000, key_cols = { 1, 2 } }))
        if rows == 0 then break end
        n = n + rows
        keys[#keys + 1] = table.concat(key, "/")
      end
      assert.are.equal(25000, n)
      assert.are.same({ "1000/k0", "2000/k0", "2500/k0" }, keys)
      assert.are.same(s:query("CHECKSUM TABLE t.ck")[1][2], d:query("CHECKSUM TABLE t.ck")[1][2])
    end)

    it("a source failure aborts the LOAD (rolled back) and is reported as the source's error", function()
      assert(d:exec("TRUNCATE TABLE t.wide"))
      local sc = assert(conn.open(src.uri, { role = "source" }))
      local sink = assert(conn.open(dst.uri, { role = "sink", local_infile = true }))
      local cur = assert(sc:stream("SELECT id, pad FROM t.wide ORDER BY id"))
      local sql = LOAD:format("t.wide", "")
      assert.are.equal(1000, (sink:load_from(cur, sql, { max_rows = 1000 })))
      assert(s:exec("KILL " .. sc:thread_id()))
      local rows, err, errno = sink:load_from(cur, sql, { max_rows = 29000 })
      assert.is_nil(rows)
      assert.matches(("^reading from source root@127%%.0%%.0%%.1:%d failed: "):format(src.port), err)
      assert.is_true(errno == 2013 or errno == 2006 or errno == 1927, "errno " .. tostring(errno))
      -- the chunk that failed left nothing behind
      assert.are.equal("1000", d:query_one("SELECT COUNT(*) FROM t.wide")[1])
      assert.are.same({ nil, ("connection root@127.0.0.1:%d is closed: a LOAD DATA was aborted because its " ..
        "source failed"):format(dst.port), 2000 }, { sink:query("SELECT 1") })
      cur:close()
      sc:close()
    end)

    it("a sink error is the sink's; misuse raises", function()
      local cur = assert(s:stream("SELECT id, pad FROM t.wide ORDER BY id"))
      assert.are.same({ nil, "Table 't.nope' doesn't exist", 1146, "42S02" },
        { d:load_from(cur, LOAD:format("t.nope", ""), { max_rows = 10 }) })
      assert.are.same({ nil, "load_from: the statement did not read LOCAL INFILE data " ..
        "(expected LOAD DATA LOCAL INFILE 'mocdc://stream' ...)", 2000 },
        { d:load_from(cur, "DO 1", { max_rows = 10 }) })
      local plain = assert(conn.open(dst.uri))
      assert.has_error(function() plain:load_from(cur, LOAD:format("t.wide", ""), { max_rows = 1 }) end,
        ("load_from: connection root@127.0.0.1:%d was opened without local_infile"):format(dst.port))
      assert.has_error(function() d:load_from(cur, LOAD:format("t.wide", ""), {}) end,
        "load_from: opts.max_rows must be a number")
      assert.has_error(function() d:load_from(cur, LOAD:format("t.wide", ""), { max_rows = 1, key_cols = { 3 } }) end,
        "load_from: key column 3 is out of range (the cursor has 2 columns)")
      cur:close()
      plain:close()
    end)

    it("never serves local files to a LOAD DATA LOCAL outside load_from", function()
      local c = assert(conn.open(dst.uri, { local_infile = true }))
      assert.are.same({ nil, "LOAD DATA LOCAL INFILE is refused: mocdc serves local data only through load_from()",
        2000, "HY000" }, { c:exec("LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE t.wide") })
      assert.are.equal("1", c:query_one("SELECT 1")[1])
      local p = assert(conn.open(dst.uri))
      local ok, err = p:exec("LOAD DATA LOCAL INFILE '/etc/passwd' INTO TABLE t.wide")
      assert.is_nil(ok)
      assert.matches("disabled the local infile capability", err, 1, true)
      c:close()
      p:close()
    end)
  end)
end)
