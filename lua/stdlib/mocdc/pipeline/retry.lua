-- The retry policy of `mocdc run` pipelines and task workers (one for both):
-- a transient failure (errors.retryable: by errno / sqlstate) is retried after
-- 200 ms, doubling up to 30 s, at most `limit` times in a row (maxRetries,
-- default 10, about 2 minutes); then the job stops with the error. Progress
-- (a sink commit, or caught up) resets the count. Every retry reopens the
-- job's connections and resumes from the sink's watermark (exactly once).
local errors = require("mocdc.errors")
local options = require("mocdc.pipeline.options")
local util = require("mocdc.util.lib")

local M = { FIRST = 0.2, MAX = 30, LIMIT = 10 }

local Policy = {}
Policy.__index = Policy

-- new(o): the policy for a job's options (o.maxRetries: the limit, 0 = never
-- retry; raises exit 2 when it is not a number >= 0).
function M.new(o)
  local n = options.number(o or {}, "maxRetries", M.LIMIT, 0)
  return setmetatable({ limit = math.floor(n), attempt = 0, delay = M.FIRST }, Policy)
end

-- failed(e) -> seconds to wait before the next attempt, or nil: stop (not
-- transient, or the limit is reached).
function Policy:failed(e)
  if not errors.retryable(e) or self.attempt >= self.limit then return nil end
  self.attempt = self.attempt + 1
  self.first = self.first or util.now()
  local d = self.delay
  self.delay = math.min(self.delay * 2, M.MAX)
  return d
end

-- recovered() -> the number of retries it took (0: none pending); resets the policy.
function Policy:recovered()
  local n = self.attempt
  self.attempt, self.delay, self.first = 0, M.FIRST, nil
  return n
end

-- wait(seconds, stop) -> false when stop() became true meanwhile.
function M.wait(seconds, stop)
  local deadline = util.mono() + seconds
  while util.mono() < deadline do
    if util.stop_requested() or (stop and stop()) then return false end
    util.sleep(math.min(0.05, math.max(0, deadline - util.mono())))
  end
  return not (util.stop_requested() or (stop and stop()))
end

return M
