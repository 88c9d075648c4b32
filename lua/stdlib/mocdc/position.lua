-- Binlog positions {file=, pos=, gtid=}: comparison and formatting.
local M = {}

local function seq(file)
  if not file then return -1 end -- a GTID-only start sorts before any file position
  return tonumber(file:match("%.(%d+)$")) or 0
end

-- compare(a, b) -> -1, 0, 1 (nil sorts first)
function M.compare(a, b)
  if a == nil and b == nil then return 0 end
  if a == nil then return -1 end
  if b == nil then return 1 end
  local sa, sb = seq(a.file), seq(b.file)
  if sa ~= sb then return sa < sb and -1 or 1 end
  local pa, pb = a.pos or 0, b.pos or 0
  if pa ~= pb then return pa < pb and -1 or 1 end
  return 0
end

function M.min(a, b) return M.compare(a, b) <= 0 and a or b end
function M.max(a, b) return M.compare(a, b) >= 0 and a or b end

function M.format(p)
  if not p then return "(none)" end
  if not p.file then return "gtid " .. tostring(p.gtid) end
  return string.format("%s:%d%s", p.file, p.pos or 4, p.gtid and (" gtid " .. p.gtid) or "")
end

function M.copy(p)
  if not p then return nil end
  return { file = p.file, pos = p.pos, gtid = p.gtid, ts = p.ts }
end

return M
