-- mocdc.rowdiff: the row merge of snapshot diffing (host/rowdiff.c).
--
--   local rowdiff = require("mocdc.rowdiff")
--   rowdiff.rows(old_batch, new_batch, key, out) -> inserts, updates, deletes
--     `old` and `new` hold the same key range (same columns, rows in any
--     order); the difference is appended to `out`: insert for a key only in
--     `new`, update(before, after) for a key whose row differs in any byte or
--     NULL flag, delete for a key only in `old`. `key` lists 1-based columns.
--   rowdiff.sum_add(a, b) -> a + b, exact, for decimal strings of any length
--     (the chunk checksums' sums; see engine/snapdiff_sql.lua).
local lib = require("mocdc.rowdiff.lib")

return { rows = lib.rows, sum_add = lib.sum_add }
