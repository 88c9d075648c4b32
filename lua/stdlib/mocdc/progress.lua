-- Progress line for long copies: rows, rows/s and ETA per table on a
-- terminal (stderr); silent when stderr is not a terminal.
local util = require("mocdc.util.lib")
local M = {}
local P = {}
P.__index = P

local function fmt_int(n)
  local s = tostring(math.floor(n))
  return (s:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", ""))
end
M.fmt_int = fmt_int

function M.new(label, total, opts)
  local tty
  if opts and opts.tty ~= nil then tty = opts.tty else tty = util.isatty(2) end
  return setmetatable({ label = label, total = total, rows = 0, start = util.mono(), last = 0,
    tty = tty, out = io.stderr }, P)
end

function P:add(n)
  self.rows = self.rows + n
  if not self.tty then return end
  local now = util.mono()
  if now - self.last < 0.25 then return end
  self.last = now
  self:draw(now)
end

function P:draw(now)
  local el = math.max(now - self.start, 1e-6)
  local rate = self.rows / el
  local line
  if self.total and self.total > 0 then
    local left = math.max(self.total - self.rows, 0)
    local eta = rate > 0 and left / rate or 0
    line = string.format("%s: %s/~%s rows  %s rows/s  ETA %ds", self.label, fmt_int(self.rows),
      fmt_int(self.total), fmt_int(rate), math.floor(eta + 0.5))
  else
    line = string.format("%s: %s rows  %s rows/s", self.label, fmt_int(self.rows), fmt_int(rate))
  end
  self.out:write("\r\27[K", line)
  self.out:flush()
end

function P:finish()
  local el = util.mono() - self.start
  if self.tty then self.out:write("\r\27[K") self.out:flush() end
  return self.rows, el
end

return M
