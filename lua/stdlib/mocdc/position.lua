-- Binlog positions {file=, pos=, gtid=}: comparison and formatting.
local M = {}

local function seq(file)
  return tonumber(file:match("%.(%d+)$")) or 0
end

-- compare(a, b) -> -1, 0, 1 (nil sorts first)
function M.compare(a, b)
  if a == nil and b == nil then return 0 end
  if a == nil then return -1 end
  if b == nil then return 1 end
  local sa, sb = seq(a.file), seq(b.file)
  if sa ~= sb then return sa < sb and -1 or 1 end
  if a.pos ~= b.pos then return a.pos < b.pos and -1 or 1 end
  return 0
end

function M.min(a, b) return M.compare(a, b) <= 0 and a or b end
function M.max(a, b) return M.compare(a, b) >= 0 and a or b end

function M.format(p)
  if not p then return "(none)" end
  return string.format("%s:%d%s", p.file, p.pos, p.gtid and (" gtid " .. p.gtid) or "")
end

function M.copy(p)
  if not p then return nil end
  return { file = p.file, pos = p.pos, gtid = p.gtid, ts = p.ts }
end

return M
