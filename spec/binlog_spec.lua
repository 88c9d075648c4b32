-- mocdc.binlog: value decoding and formatting without a server (host/binlog.c).
-- Every type against a real server: spec/integration/binlog_types_spec.lua.
local binlog = require("mocdc.binlog")
local lib = require("mocdc.binlog.lib")
local ffi = require("ffi")

local decode = lib.decode_value

local function bytes(...) -- bytes(0x01, 0xff, ...) -> string
  return string.char(...)
end
local function float_bytes(x) return ffi.string(ffi.new("float[1]", x), 4) end
local function double_bytes(x) return ffi.string(ffi.new("double[1]", x), 8) end
local function be(v, n) -- big-endian n bytes of a non-negative integer (< 2^53)
  local t = {}
  for i = n, 1, -1 do
    t[i] = string.char(v % 256)
    v = math.floor(v / 256)
  end
  return table.concat(t)
end

-- binlog type codes
local TINY, SHORT, LONG, FLOAT, DOUBLE, LONGLONG, INT24, DATE, YEAR = 1, 2, 3, 4, 5, 8, 9, 10, 13
local VARCHAR, BIT, TIMESTAMP2, DATETIME2, TIME2 = 15, 16, 17, 18, 19
local JSON, NEWDECIMAL, BLOB, STRING = 245, 246, 252, 254

describe("mocdc.binlog decode_value", function()
  it("decodes integers signed and unsigned", function()
    assert.equal("-128", decode(TINY, 0, bytes(0x80)))
    assert.equal("128", decode(TINY, 0, bytes(0x80), true))
    assert.equal("-32768", decode(SHORT, 0, bytes(0x00, 0x80)))
    assert.equal("65535", decode(SHORT, 0, bytes(0xff, 0xff), true))
    assert.equal("-8388608", decode(INT24, 0, bytes(0x00, 0x00, 0x80)))
    assert.equal("-1", decode(INT24, 0, bytes(0xff, 0xff, 0xff)))
    assert.equal("16777215", decode(INT24, 0, bytes(0xff, 0xff, 0xff), true))
    assert.equal("-1", decode(LONG, 0, bytes(0xff, 0xff, 0xff, 0xff)))
    assert.equal("4294967295", decode(LONG, 0, bytes(0xff, 0xff, 0xff, 0xff), true))
    assert.equal("18446744073709551615", decode(LONGLONG, 0, ("\255"):rep(8), true))
    assert.equal("-9223372036854775808", decode(LONGLONG, 0, ("\0"):rep(7) .. "\128"))
    local v, used = decode(LONGLONG, 0, ("\0"):rep(8) .. "rest")
    assert.equal("0", v)
    assert.equal(8, used)
  end)

  it("decodes DECIMAL with all digits, leading zero and sign", function()
    local m = 10 * 256 + 2 -- DECIMAL(10,2): 4 bytes for 8 integer digits, 1 byte for 2 fraction digits
    assert.equal("1234.50", decode(NEWDECIMAL, m, bytes(0x80, 0x00, 0x04, 0xD2, 0x32)))
    assert.equal("-1234.50", decode(NEWDECIMAL, m, bytes(0x7F, 0xFF, 0xFB, 0x2D, 0xCD)))
    assert.equal("0.00", decode(NEWDECIMAL, m, bytes(0x80, 0, 0, 0, 0)))
    -- DECIMAL(65,30) = 0.000...001: 16 integer bytes, 3 words + 2 bytes of fraction
    local b = "\128" .. ("\0"):rep(15) .. ("\0"):rep(12) .. bytes(0x00, 0x01)
    local v, used = decode(NEWDECIMAL, 65 * 256 + 30, b)
    assert.equal("0." .. ("0"):rep(29) .. "1", v)
    assert.equal(30, used)
  end)

  it("formats FLOAT as its exact DOUBLE value (round-trips) and DOUBLE like the server", function()
    assert.equal("3.140000104904175", decode(FLOAT, 4, float_bytes(3.14)))
    assert.equal("16777216", decode(FLOAT, 4, float_bytes(16777217)))
    assert.equal("1.2345678955701443e20", decode(FLOAT, 4, float_bytes(1.23456789e20)))
    assert.equal("0.30000000000000004", decode(DOUBLE, 8, double_bytes(0.1 + 0.2)))
    assert.equal("1e15", decode(DOUBLE, 8, double_bytes(1e15)))
    assert.equal("100000000000000", decode(DOUBLE, 8, double_bytes(1e14)))
    assert.equal("-2.2250738585072014e-308", decode(DOUBLE, 8, double_bytes(-2.2250738585072014e-308)))
    assert.equal("5e-324", lib.format_real(5e-324))
    assert.equal("0.0000001", lib.format_real(1e-7, true))
    assert.equal("1.2345678901234568e18", lib.format_real(1234567890123456789))
    assert.equal("0", lib.format_real(-0.0))
  end)

  it("decodes temporal types with exactly fsp fraction digits", function()
    assert.equal("0000", decode(YEAR, 0, "\0"))
    assert.equal("2000", decode(YEAR, 0, "\100"))
    assert.equal("2024-02-29", decode(DATE, 0, bytes(0x5d, 0xd0, 0x0f)))
    assert.equal("-838:59:59", decode(TIME2, 0, be(0x4b9105, 3)))
    assert.equal("-00:00:01.500000", decode(TIME2, 6, be(0x7ffffef85ee0, 6)))
    assert.equal("-00:00:00.001", decode(TIME2, 3, bytes(0x7f, 0xff, 0xff, 0xff, 0xf6)))
    assert.equal("2024-02-29 12:34:56.789012", decode(DATETIME2, 6, be(0x99b2bac8b8, 5) .. be(789012, 3)))
    assert.equal("2024-02-29 12:34:56", decode(DATETIME2, 0, be(0x99b2bac8b8, 5)))
    assert.equal("2024-02-29 12:34:56.000001", decode(TIMESTAMP2, 6, be(1709210096, 4) .. be(1, 3)))
    assert.equal("2024-02-29 12:34:56.50", decode(TIMESTAMP2, 2, be(1709210096, 4) .. "\50"))
    assert.equal("0000-00-00 00:00:00", decode(TIMESTAMP2, 0, be(0, 4)))
  end)

  it("decodes strings, BINARY padding, BIT, ENUM and SET", function()
    assert.equal("ab", decode(STRING, 254 * 256 + 10, "\2ab"))
    assert.equal("a\0\0\0", decode(STRING, 254 * 256 + 4, "\1a", false, nil, true))
    -- CHAR(100) utf8mb4 = 400 bytes: length bits in the type byte, 2-byte length prefix
    local v, used = decode(STRING, 0xEE * 256 + 0x90, bytes(3, 0) .. "xyz")
    assert.equal("xyz", v)
    assert.equal(5, used)
    assert.equal("abc", decode(VARCHAR, 10, "\3abc"))
    assert.equal("abc", decode(VARCHAR, 300, "\3\0abc"))
    assert.equal("a\0b", decode(BLOB, 2, "\3\0a\0b"))
    assert.equal("\3\255", decode(BIT, 1 * 256 + 2, "\3\255"))          -- BIT(10): 2 bytes
    assert.equal(("\255"):rep(8), decode(BIT, 8 * 256, ("\255"):rep(8))) -- BIT(64)
    assert.equal("b", decode(STRING, 247 * 256 + 1, "\2", false, { "a", "b" }))
    assert.equal("", decode(STRING, 247 * 256 + 1, "\0", false, { "a", "b" }))
    assert.equal("x,z", decode(STRING, 248 * 256 + 1, "\5", false, { "x", "y", "z" }))
    assert.equal("", decode(STRING, 248 * 256 + 1, "\0", false, { "x", "y", "z" }))
  end)

  it("reports truncated values and unsupported types", function()
    local v, err = decode(LONG, 0, "\1\2")
    assert.is_nil(v)
    assert.equal("truncated value", err)
    v, err = decode(VARCHAR, 10, "\5ab")
    assert.is_nil(v)
    assert.equal("truncated value", err)
    v, err = decode(JSON, 4, "\0\0\0\0")
    assert.is_nil(v)
    assert.equal("unsupported type", err)
  end)
end)

describe("mocdc.binlog", function()
  it("parses ENUM/SET value lists of information_schema COLUMN_TYPE", function()
    assert.same({ "a", "b'c", "", "d,e" }, binlog._parse_values("enum('a','b''c','','d,e')"))
    assert.same({ "x" }, binlog._parse_values("set('x')"))
  end)

  it("raises on wrong arguments", function()
    assert.has_error(function() lib.open("x") end)
    assert.has_error(function() lib.open{ host = "127.0.0.1" } end,
      "binlog.open: server_id must be a number in 1..4294967295, unique among the source's replicas")
    assert.has_error(function() lib.open{ server_id = 5, port = "x" } end,
      "binlog.open: field 'port' must be a number")
    assert.has_error(function() binlog.open() end, "binlog.open: options table expected")
  end)

  it("returns nil, msg, errno when the source is unreachable", function()
    local s, msg, errno = binlog.open{ host = "127.0.0.1", port = 1, user = "repl", password = "secret",
                                       server_id = 77, connect_timeout = 2 }
    assert.is_nil(s)
    assert.truthy(msg:find("^cannot connect to binlog source repl@127.0.0.1:1: "), msg)
    assert.is_nil(msg:find("secret", 1, true))
    assert.is_number(errno)
  end)
end)
