-- The "all types" table of issues 2 and 3 (every MySQL type, extreme values,
-- NUL bytes, emoji, NULL in every column), shared by the full-copy and the
-- binlog specs.
local M = {}

-- CREATE TABLE for `qname` ("db.t").
function M.ddl(qname)
  return "CREATE TABLE " .. qname .. [[ (
        id INT PRIMARY KEY,
        ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED, mi MEDIUMINT, miu MEDIUMINT UNSIGNED,
        i INT, iu INT UNSIGNED, bi BIGINT, biu BIGINT UNSIGNED,
        d DECIMAL(65,30), f FLOAT, db DOUBLE, b1 BIT(1), b64 BIT(64),
        dt DATE, tm TIME(6), dtm DATETIME(6), ts TIMESTAMP(6) NULL, y YEAR,
        c CHAR(10), vc VARCHAR(100), bn BINARY(4), vb VARBINARY(20), bl BLOB, tx TEXT,
        e ENUM('a','b','c'), st SET('x','y','z'), j JSON
      ) DEFAULT CHARSET=utf8mb4]]
end

-- Rows 1 (extremes), 2 (zeros/empties/negative fractions) and 3 (all NULL).
function M.insert(qname)
  return "SET time_zone = '+00:00'; INSERT INTO " .. qname .. [[ VALUES
       (1, -128, 255, -32768, 65535, -8388608, 16777215, -2147483648, 4294967295,
        -9223372036854775808, 18446744073709551615,
        -12345678901234567890123456789012345.123456789012345678901234567890, 123456789, -2.718281828459045,
        b'1', b'1111111111111111111111111111111111111111111111111111111111111111',
        '2024-02-29', '-838:59:59.000000', '2024-01-15 14:30:00.123456', '2038-01-19 03:14:07.999999', 2024,
        'chär', 'emoji 😀 tab	nl
 bs\\ q''', x'00010200', x'00ff00', x'000102030405', 'text', 'b', 'x,z', '{"k": [1, "v"]}'),
       (2, 127, 0, 32767, 0, 8388607, 0, 2147483647, 0, 9223372036854775807, 0,
        0.000000000000000000000000000001, -0.1, 1e308, b'0', b'0',
        '1000-01-01', '-00:00:01.500000', '1000-01-01 00:00:00.000000', '1970-01-01 00:00:01.000000', 0,
        '', '', x'00000000', x'', x'', '', 'a', '', '[]'),
       (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
        NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)]]
end

-- A select list that compares every column exactly (binary data as HEX, FLOAT
-- through its exact DOUBLE value).
M.COMPARE = "id, ti, tiu, si, siu, mi, miu, i, iu, bi, biu, d, HEX(CAST(f AS DOUBLE)), db, HEX(b1), HEX(b64), " ..
  "dt, tm, dtm, ts, y, HEX(c), HEX(vc), HEX(bn), HEX(vb), HEX(bl), tx, e, st, j"

return M
