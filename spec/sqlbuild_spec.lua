-- mocdc.sqlbuild: batch -> sink SQL (host/sqlbuild.c). Exact SQL asserted.
local batch = require("mocdc.batch")
local sb = require("mocdc.sqlbuild")
local NULL = batch.NULL

local function mk(cols, rows)
  local b = batch.new(cols)
  for _, r in ipairs(rows or {}) do b:add(r[1], r[2], r[3]) end
  return b
end

local C3 = { { name = "id", class = "num" }, { name = "name", class = "str" }, { name = "v", class = "bin" } }

describe("sqlbuild.quote_ident", function()
  it("backticks and doubles backticks", function()
    assert.equal("`t`", sb.quote_ident("t"))
    assert.equal("`a``b`", sb.quote_ident("a`b"))
    assert.equal("````", sb.quote_ident("`"))
    assert.equal("`sp ace.dot`", sb.quote_ident("sp ace.dot"))
    assert.equal("`d`.`t``x`", sb.quote_table("d", "t`x"))
  end)
end)

describe("sqlbuild.quote_value", function()
  local q = sb.quote_value
  it("writes NULL for nil and batch.NULL", function()
    assert.equal("NULL", q("num", nil))
    assert.equal("NULL", q("str", NULL))
    assert.equal("NULL", q("bin"))
    assert.equal("NULL", q("bit", nil))
  end)

  it("writes numbers bare", function()
    assert.equal("0", q("num", "0"))
    assert.equal("-128", q("num", "-128"))
    assert.equal("18446744073709551615", q("num", "18446744073709551615"))
    assert.equal("-9223372036854775808", q("num", "-9223372036854775808"))
    local dec = "-" .. ("9"):rep(35) .. "." .. ("9"):rep(30) -- DECIMAL(65,30)
    assert.equal(dec, q("num", dec))
    assert.equal("1.7976931348623157e308", q("num", "1.7976931348623157e308"))
    assert.equal("-1.5E-45", q("num", "-1.5E-45"))
    assert.equal("3.4028235e+38", q("num", "3.4028235e+38"))
    assert.equal(".5", q("num", ".5"))
    assert.equal("5.", q("num", "5."))
    assert.equal("2024", q("num", "2024")) -- YEAR
    assert.equal("42", q("num", 42))
  end)

  it("quotes a num value that does not look numeric (no injected SQL)", function()
    assert.equal("'1; DROP TABLE t'", q("num", "1; DROP TABLE t"))
    assert.equal("'1) OR (1=1'", q("num", "1) OR (1=1"))
    assert.equal("''", q("num", ""))
    assert.equal("'-'", q("num", "-"))
    assert.equal("'.'", q("num", "."))
    assert.equal("'1e'", q("num", "1e"))
    assert.equal("'1e+'", q("num", "1e+"))
    assert.equal("'0x1F'", q("num", "0x1F"))
    assert.equal("'1 '", q("num", "1 "))
    assert.equal("'nan'", q("num", "nan"))
    assert.equal("'1\\'2'", q("num", "1'2"))
  end)

  it("escapes every special byte in strings", function()
    assert.equal([['\0']], q("str", "\0"))
    assert.equal([['\'']], q("str", "'"))
    assert.equal([['\"']], q("str", '"'))
    assert.equal([['\\']], q("str", "\\"))
    assert.equal([['\n']], q("str", "\n"))
    assert.equal([['\r']], q("str", "\r"))
    assert.equal([['\Z']], q("str", "\26"))
    assert.equal([['a\0b\'c\"d\\e\nf\rg\Zh']], q("str", "a\0b'c\"d\\e\nf\rg\26h"))
    assert.equal("''", q("str", ""))
    -- other bytes pass through untouched
    assert.equal("'\t\b%_\127'", q("str", "\t\b%_\127"))
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    local lit = q("str", table.concat(all))
    assert.equal(256 + 7 + 2, #lit)
  end)

  it("keeps UTF-8 (emoji) as is", function()
    assert.equal("'😀 naïve 中文'", q("str", "😀 naïve 中文"))
  end)

  it("writes temporal values as strings", function()
    assert.equal("'-838:59:59.000000'", q("str", "-838:59:59.000000"))
    assert.equal("'2024-01-15 14:30:00.123456'", q("str", "2024-01-15 14:30:00.123456"))
  end)

  it("writes binary as X'hex', empty as ''", function()
    assert.equal("X'00FF7F0A27'", q("bin", "\0\255\127\n'"))
    assert.equal("X'000000'", q("bin", "\0\0\0"))
    assert.equal("''", q("bin", ""))
  end)

  it("writes BIT from big-endian bytes as b'...'", function()
    assert.equal("b'00000101'", q("bit", "\5"))
    assert.equal("b'0000000110000000'", q("bit", "\1\128"))
    assert.equal("b'" .. ("1"):rep(64) .. "'", q("bit", ("\255"):rep(8)))
    assert.equal("b'" .. ("0"):rep(64) .. "'", q("bit", ("\0"):rep(8)))
    assert.equal("b''", q("bit", ""))
  end)

  it("raises on a bad class or value type", function()
    assert.has_error(function() sb.quote_value("blob", "x") end, "bad argument #1 to 'quote_value' (invalid option 'blob')")
    assert.has_error(function() sb.quote_value("str", {}) end,
      "bad argument #2 to 'quote_value' (string, number, nil or NULL expected)")
  end)
end)

describe("sqlbuild.build", function()
  local b
  before_each(function()
    b = mk(C3, {
      { "insert", nil, { "1", "a'b", "\0\1" } },
      { "insert", nil, { "2", "x", NULL } },
      { "delete", { "3", "y", "" }, nil },
      { "update", { "4", "y", "" }, { "5", "z", "" } },
    })
  end)

  it("replace mode (default)", function()
    local s, st = sb.build(b, { table = "`d`.`t`", key = { 1 } })
    assert.same({
      "DELETE FROM `d`.`t` WHERE `id` IN (3,4)",
      "REPLACE INTO `d`.`t` (`id`,`name`,`v`) VALUES (1,'a\\'b',X'0001'),(2,'x',NULL),(5,'z','')",
    }, s)
    assert.same({ deletes = 2, upserts = 3 }, st)
  end)

  it("insert mode deletes keys the batch updated or deleted, then plain INSERT", function()
    local s, st = sb.build(b, { table = "`t`", key = { 1 }, mode = "insert" })
    assert.same({
      "DELETE FROM `t` WHERE `id` IN (3,4,5)",
      "INSERT INTO `t` (`id`,`name`,`v`) VALUES (1,'a\\'b',X'0001'),(2,'x',NULL),(5,'z','')",
    }, s)
    assert.same({ deletes = 3, upserts = 3 }, st)
  end)

  it("upsert mode: ON DUPLICATE KEY UPDATE for non-key columns", function()
    local s = sb.build(b, { table = "`t`", key = { 1 }, mode = "upsert" })
    assert.same({
      "DELETE FROM `t` WHERE `id` IN (3,4)",
      "INSERT INTO `t` (`id`,`name`,`v`) VALUES (1,'a\\'b',X'0001'),(2,'x',NULL),(5,'z','')"
        .. " ON DUPLICATE KEY UPDATE `name`=VALUES(`name`),`v`=VALUES(`v`)",
    }, s)
  end)

  it("upsert mode when every column is a key column", function()
    local k = mk({ { name = "a", class = "num" }, { name = "b", class = "num" } },
      { { "insert", nil, { "1", "2" } } })
    assert.same({ "INSERT INTO `t` (`a`,`b`) VALUES (1,2) ON DUPLICATE KEY UPDATE `a`=`a`" },
      sb.build(k, { table = "`t`", key = { 1, 2 }, mode = "upsert" }))
  end)

  it("composite key deletes: mysql row constructor", function()
    local s = sb.build(b, { table = "`t`", key = { 1, 2 } })
    assert.same({
      "DELETE FROM `t` WHERE (`id`,`name`) IN ((3,'y'),(4,'y'))",
      "REPLACE INTO `t` (`id`,`name`,`v`) VALUES (1,'a\\'b',X'0001'),(2,'x',NULL),(5,'z','')",
    }, s)
  end)

  it("composite key deletes: matrixone dialect", function()
    local s = sb.build(b, { table = "`t`", key = { 1, 2 }, dialect = "matrixone" })
    assert.same({
      "DELETE FROM `t` WHERE (`id` = 3 and `name` = 'y') or (`id` = 4 and `name` = 'y')",
      "REPLACE INTO `t` (`id`,`name`,`v`) VALUES (1,'a\\'b',X'0001'),(2,'x',NULL),(5,'z','')",
    }, s)
  end)

  it("single key deletes use IN in the matrixone dialect too", function()
    local s = sb.build(b, { table = "`t`", key = { 1 }, dialect = "matrixone" })
    assert.equal("DELETE FROM `t` WHERE `id` IN (3,4)", s[1])
  end)

  it("key order follows opts.key", function()
    local s = sb.build(b, { table = "`t`", key = { 2, 1 } })
    assert.equal("DELETE FROM `t` WHERE (`name`,`id`) IN (('y',3),('y',4))", s[1])
  end)

  it("empty batch gives no statements", function()
    local s, st = sb.build(batch.new(C3), { table = "`t`", key = { 1 } })
    assert.same({}, s)
    assert.same({ deletes = 0, upserts = 0 }, st)
  end)

  it("only deletes / only upserts", function()
    local d = mk(C3, { { "delete", { "1", "a", "" } }, { "delete", { "2", "b", "" } } })
    assert.same({ "DELETE FROM `t` WHERE `id` IN (1,2)" }, sb.build(d, { table = "`t`", key = { 1 } }))
    local i = mk(C3, { { "insert", nil, { "1", "a", "" } } })
    assert.same({ "REPLACE INTO `t` (`id`,`name`,`v`) VALUES (1,'a','')" },
      sb.build(i, { table = "`t`", key = { 1 } }))
  end)

  it("quotes column names", function()
    local q = mk({ { name = "i`d", class = "num" }, { name = "sel ect", class = "str" } },
      { { "insert", nil, { "1", "x" } }, { "delete", { "2", "y" } } })
    assert.same({
      "DELETE FROM `t` WHERE `i``d` IN (2)",
      "REPLACE INTO `t` (`i``d`,`sel ect`) VALUES (1,'x')",
    }, sb.build(q, { table = "`t`", key = { 1 } }))
  end)

  it("keeps special values exact in rows", function()
    local cols = { { name = "id", class = "num" }, { name = "u", class = "num" }, { name = "d", class = "num" },
      { name = "t", class = "str" }, { name = "e", class = "str" }, { name = "blob", class = "bin" },
      { name = "bits", class = "bit" } }
    local dec = ("9"):rep(35) .. "." .. ("9"):rep(30)
    local x = mk(cols, { { "insert", nil,
      { "1", "18446744073709551615", dec, "-838:59:59.000000", "😀", "\0\0", "\128\0\0\0\0\0\0\1" } } })
    assert.same({ "REPLACE INTO `t` (`id`,`u`,`d`,`t`,`e`,`blob`,`bits`) VALUES (1,18446744073709551615,"
      .. dec .. ",'-838:59:59.000000','😀',X'0000',b'"
      .. "1000000000000000000000000000000000000000000000000000000000000001')" },
      sb.build(x, { table = "`t`", key = { 1 } }))
  end)
end)

describe("sqlbuild.build collapse", function()
  local C2 = { { name = "id", class = "num" }, { name = "v", class = "str" } }
  local function build(rows, opts)
    opts = opts or {}
    opts.table = opts.table or "`t`"
    opts.key = opts.key or { 1 }
    return sb.build(mk(C2, rows), opts)
  end

  it("insert + update + delete of one key is one delete", function()
    assert.same({ "DELETE FROM `t` WHERE `id` IN (1)" }, build({
      { "insert", nil, { "1", "a" } },
      { "update", { "1", "a" }, { "1", "b" } },
      { "delete", { "1", "b" } },
    }))
  end)

  it("insert + updates: the last image wins", function()
    assert.same({ "REPLACE INTO `t` (`id`,`v`) VALUES (1,'c')" }, build({
      { "insert", nil, { "1", "a" } },
      { "update", { "1", "a" }, { "1", "b" } },
      { "update", { "1", "b" }, { "1", "c" } },
    }))
  end)

  it("delete then insert of one key is an upsert (replace) or delete + insert (insert)", function()
    local rows = { { "delete", { "1", "a" } }, { "insert", nil, { "1", "b" } } }
    assert.same({ "REPLACE INTO `t` (`id`,`v`) VALUES (1,'b')" }, build(rows))
    assert.same({ "DELETE FROM `t` WHERE `id` IN (1)", "INSERT INTO `t` (`id`,`v`) VALUES (1,'b')" },
      build(rows, { mode = "insert" }))
  end)

  it("a primary key change deletes the old key and upserts the new one", function()
    assert.same({ "DELETE FROM `t` WHERE `id` IN (1)", "REPLACE INTO `t` (`id`,`v`) VALUES (2,'a')" },
      build({ { "update", { "1", "a" }, { "2", "a" } } }))
  end)

  it("pk change then reuse of the old key", function()
    assert.same({ "REPLACE INTO `t` (`id`,`v`) VALUES (1,'new'),(2,'a')" }, build({
      { "update", { "1", "a" }, { "2", "a" } },
      { "insert", nil, { "1", "new" } },
    }))
  end)

  it("swapping two keys through a third", function()
    assert.same({ "DELETE FROM `t` WHERE `id` IN (3)", "REPLACE INTO `t` (`id`,`v`) VALUES (1,'b'),(2,'a')" },
      build({
        { "update", { "1", "a" }, { "3", "a" } },
        { "update", { "2", "b" }, { "1", "b" } },
        { "update", { "3", "a" }, { "2", "a" } },
      }))
  end)

  it("compares keys by exact bytes", function()
    local s = build({
      { "insert", nil, { "1", "a" } },
      { "insert", nil, { "01", "b" } },
      { "insert", nil, { "1", "c" } },
    })
    assert.same({ "REPLACE INTO `t` (`id`,`v`) VALUES (1,'c'),(01,'b')" }, s)
    local bin = mk({ { name = "k", class = "bin" }, { name = "v", class = "str" } }, {
      { "insert", nil, { "a\0b", "1" } },
      { "insert", nil, { "a\0c", "2" } },
      { "insert", nil, { "a\0b", "3" } },
      { "insert", nil, { "a", "4" } },
    })
    assert.same({ "REPLACE INTO `t` (`k`,`v`) VALUES (X'610062','3'),(X'610063','2'),(X'61','4')" },
      sb.build(bin, { table = "`t`", key = { 1 } }))
  end)

  it("collapses a composite key", function()
    local c = mk({ { name = "a", class = "num" }, { name = "b", class = "str" }, { name = "v", class = "num" } }, {
      { "insert", nil, { "1", "x", "1" } },
      { "insert", nil, { "1", "y", "2" } },
      { "update", { "1", "x", "1" }, { "1", "x", "3" } },
      { "delete", { "1", "y", "2" } },
    })
    assert.same({ "DELETE FROM `t` WHERE (`a`,`b`) IN ((1,'y'))", "REPLACE INTO `t` (`a`,`b`,`v`) VALUES (1,'x',3)" },
      sb.build(c, { table = "`t`", key = { 1, 2 } }))
  end)

  it("many keys (hash table growth) keep first-appearance order", function()
    local rows = {}
    for i = 1, 5000 do rows[#rows + 1] = { "insert", nil, { tostring(i), "a" } } end
    for i = 1, 5000, 2 do rows[#rows + 1] = { "delete", { tostring(i), "a" } } end
    local s, st = build(rows)
    assert.same({ deletes = 2500, upserts = 2500 }, st)
    assert.equal(2, #s)
    local ids = {}
    for i = 1, 5000, 2 do ids[#ids + 1] = tostring(i) end
    assert.equal("DELETE FROM `t` WHERE `id` IN (" .. table.concat(ids, ",") .. ")", s[1])
    local vals = {}
    for i = 2, 5000, 2 do vals[#vals + 1] = "(" .. i .. ",'a')" end
    assert.equal("REPLACE INTO `t` (`id`,`v`) VALUES " .. table.concat(vals, ","), s[2])
  end)

  it("a key holding NULL gets a NULL-safe delete of its own", function()
    local c = mk({ { name = "a", class = "num" }, { name = "b", class = "str" } }, {
      { "delete", { "1", "x" } },
      { "delete", { "2", NULL } },
      { "delete", { "3", "z" } },
    })
    assert.same({
      "DELETE FROM `t` WHERE (`a`,`b`) IN ((1,'x'))",
      "DELETE FROM `t` WHERE `a` <=> 2 AND `b` <=> NULL",
      "DELETE FROM `t` WHERE (`a`,`b`) IN ((3,'z'))",
    }, sb.build(c, { table = "`t`", key = { 1, 2 } }))
  end)
end)

describe("sqlbuild.build without a key", function()
  local C2 = { { name = "a", class = "num" }, { name = "b", class = "str" } }

  it("deletes one row NULL-safely with LIMIT, updates become delete + insert, inserts are INSERT", function()
    local b = mk(C2, {
      { "insert", nil, { "1", "x" } },
      { "delete", { "2", NULL } },
      { "update", { "3", "y" }, { "3", "z" } },
    })
    for _, mode in ipairs({ "replace", "insert", "upsert" }) do
      local s, st = sb.build(b, { table = "`t`", key = {}, mode = mode })
      assert.same({
        "DELETE FROM `t` WHERE `a` <=> 2 AND `b` <=> NULL LIMIT 1",
        "DELETE FROM `t` WHERE `a` <=> 3 AND `b` <=> 'y' LIMIT 1",
        "INSERT INTO `t` (`a`,`b`) VALUES (1,'x'),(3,'z')",
      }, s)
      assert.same({ deletes = 2, upserts = 2 }, st)
    end
  end)

  it("treats the batch as a multiset: identical rows cancel or add up", function()
    local b = mk(C2, {
      { "insert", nil, { "1", "x" } },
      { "delete", { "1", "x" } },       -- cancels the insert
      { "delete", { "2", "d" } },
      { "delete", { "2", "d" } },       -- two identical rows deleted
      { "insert", nil, { "3", "i" } },
      { "insert", nil, { "3", "i" } },  -- duplicates are legal without a key
      { "update", { "4", "u" }, { "4", "u" } }, -- no-op update
    })
    assert.same({
      "DELETE FROM `t` WHERE `a` <=> 2 AND `b` <=> 'd' LIMIT 2",
      "INSERT INTO `t` (`a`,`b`) VALUES (3,'i'),(3,'i')",
    }, sb.build(b, { table = "`t`" }))
  end)
end)

describe("sqlbuild.build splitting", function()
  local C1 = { { name = "id", class = "num" } }
  local function ins(n)
    local rows = {}
    for i = 1, n do rows[i] = { "insert", nil, { tostring(i) } } end
    return mk(C1, rows)
  end

  it("a statement of exactly max_len is allowed; one byte less splits", function()
    local one = "REPLACE INTO `t` (`id`) VALUES (1),(2)"
    assert.same({ one }, sb.build(ins(2), { table = "`t`", key = { 1 }, max_len = #one }))
    assert.same({ "REPLACE INTO `t` (`id`) VALUES (1)", "REPLACE INTO `t` (`id`) VALUES (2)" },
      sb.build(ins(2), { table = "`t`", key = { 1 }, max_len = #one - 1 }))
  end)

  it("counts the ON DUPLICATE KEY UPDATE suffix", function()
    local b = mk({ { name = "id", class = "num" }, { name = "v", class = "num" } },
      { { "insert", nil, { "1", "1" } }, { "insert", nil, { "2", "2" } } })
    local one = "INSERT INTO `t` (`id`,`v`) VALUES (1,1),(2,2) ON DUPLICATE KEY UPDATE `v`=VALUES(`v`)"
    local opts = { table = "`t`", key = { 1 }, mode = "upsert", max_len = #one }
    assert.same({ one }, sb.build(b, opts))
    opts.max_len = #one - 1
    assert.same({
      "INSERT INTO `t` (`id`,`v`) VALUES (1,1) ON DUPLICATE KEY UPDATE `v`=VALUES(`v`)",
      "INSERT INTO `t` (`id`,`v`) VALUES (2,2) ON DUPLICATE KEY UPDATE `v`=VALUES(`v`)",
    }, sb.build(b, opts))
  end)

  it("splits deletes at max_len", function()
    local rows = {}
    for i = 1, 3 do rows[i] = { "delete", { tostring(i) } } end
    local b = mk(C1, rows)
    local one = "DELETE FROM `t` WHERE `id` IN (1,2,3)"
    assert.same({ one }, sb.build(b, { table = "`t`", key = { 1 }, max_len = #one }))
    assert.same({ "DELETE FROM `t` WHERE `id` IN (1,2)", "DELETE FROM `t` WHERE `id` IN (3)" },
      sb.build(b, { table = "`t`", key = { 1 }, max_len = #one - 1 }))
    local mo = mk({ { name = "a", class = "num" }, { name = "b", class = "num" } },
      { { "delete", { "1", "1" } }, { "delete", { "2", "2" } } })
    local s = sb.build(mo, { table = "`t`", key = { 1, 2 }, dialect = "matrixone", max_len = 50 })
    assert.same({ "DELETE FROM `t` WHERE (`a` = 1 and `b` = 1)", "DELETE FROM `t` WHERE (`a` = 2 and `b` = 2)" }, s)
  end)

  it("every statement fits for many rows and sizes", function()
    local b = ins(3000)
    for _, max in ipairs({ 40, 41, 57, 100, 1000, 4096 }) do
      local s = sb.build(b, { table = "`t`", key = { 1 }, max_len = max })
      local n = 0
      for _, sql in ipairs(s) do
        assert.is_true(#sql <= max)
        for _ in sql:gmatch("%((%d+)%)") do n = n + 1 end
      end
      assert.equal(3000, n)
    end
  end)

  it("a row that cannot fit alone is an error naming its key", function()
    local b = mk({ { name = "id", class = "num" }, { name = "v", class = "str" } },
      { { "insert", nil, { "4", "x" } }, { "insert", nil, { "5", ("y"):rep(100) } } })
    local s, err = sb.build(b, { table = "`t`", key = { 1 }, max_len = 100 })
    assert.is_nil(s)
    assert.equal("row with key (id=5) needs 141 bytes, more than max-sql-length 100", err)
    -- exactly fits
    s = sb.build(b, { table = "`t`", key = { 1 }, max_len = 141 })
    assert.equal(2, #s)
  end)

  it("the default max_len is 4 MiB", function()
    local big = ("x"):rep(4194304)
    local b = mk({ { name = "id", class = "num" }, { name = "v", class = "str" } }, { { "insert", nil, { "5", big } } })
    local s, err = sb.build(b, { table = "`t`", key = { 1 } })
    assert.is_nil(s)
    assert.equal("row with key (id=5) needs 4194345 bytes, more than max-sql-length 4194304", err)
  end)

  it("shows long key values cut to 64 bytes on a character boundary", function()
    local key = ("é"):rep(40) -- 80 bytes
    local b = mk({ { name = "k", class = "str" }, { name = "n", class = "num" }, { name = "v", class = "bin" } },
      { { "insert", nil, { key, "7", ("\0"):rep(100) } } })
    local _, err = sb.build(b, { table = "`t`", key = { 1, 2 }, max_len = 100 })
    assert.equal("row with key (k='" .. ("é"):rep(31) .. "..., n=7) needs 328 bytes, more than max-sql-length 100", err)
  end)

  it("an oversize delete names the key too", function()
    local b = mk({ { name = "id", class = "str" } }, { { "delete", { ("z"):rep(200) } } })
    local _, err = sb.build(b, { table = "`t`", key = { 1 }, max_len = 100 })
    assert.equal("row with key (id='" .. ("z"):rep(63) .. "...) needs 234 bytes, more than max-sql-length 100", err)
  end)

  it("an oversize row without a key shows all its columns", function()
    local b = mk({ { name = "a", class = "num" }, { name = "b", class = "str" } },
      { { "delete", { "1", ("q"):rep(10) } } })
    local _, err = sb.build(b, { table = "`t`", max_len = 20 })
    assert.equal("row (a=1, b='qqqqqqqqqq') needs 64 bytes, more than max-sql-length 20", err)
  end)
end)

describe("sqlbuild.build arguments", function()
  local b = batch.new(C3)
  it("raises on programming errors", function()
    assert.has_error(function() sb.build({}, { table = "`t`" }) end,
      "bad argument #1 to 'build' (mocdc.batch expected, got table)")
    assert.has_error(function() sb.build(b, {}) end,
      "bad argument #2 to 'build' (opts.table must be a string)")
    assert.has_error(function() sb.build(b, { table = "`t`", mode = "merge" }) end,
      "bad argument #2 to 'build' (invalid mode 'merge')")
    assert.has_error(function() sb.build(b, { table = "`t`", dialect = "pg" }) end,
      "bad argument #2 to 'build' (invalid dialect 'pg')")
    assert.has_error(function() sb.build(b, { table = "`t`", key = { 4 } }) end,
      "bad argument #2 to 'build' (opts.key[1] is not a column index (1..3))")
    assert.has_error(function() sb.build(b, { table = "`t`", max_len = 0 }) end,
      "bad argument #2 to 'build' (opts.max_len must be a positive number)")
  end)
  it("key_indexes maps names", function()
    assert.same({ 2, 1 }, sb.key_indexes(b, { "name", "id" }))
  end)
end)
