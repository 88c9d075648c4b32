-- Issue 10: `task show` said "worker process N exited unexpectedly" for a
-- task whose worker had just stopped on an error (task_more_spec's
-- --error-handle-option stop case, under load): the status was read while
-- the worker ran, the worker then wrote "stopped" with its error and exited,
-- and the liveness check found it gone. `mocdc serve` read statuses the same
-- way and could relaunch a task that had stopped on an error.
local cjson = require("cjson")
local supervisor = require("mocdc.task.supervisor")
local util = require("mocdc.util.lib")

-- A store whose task status changes right after its first read (the worker's last write).
local function racing_store(first, last)
  local reads = 0
  return {
    get = function(_, k)
      if k:match("/status$") then
        reads = reads + 1
        return cjson.encode(reads == 1 and first or last)
      end
      if k:match("/desired$") then return "running" end
      return nil
    end,
  }
end

describe("a task status read as its worker writes its last one (issue 10)", function()
  -- this process is alive but is not a task-worker of the task: a gone worker
  local running = { state = "running", pid = util.getpid(), err = "" }
  local stopped = { state = "stopped", pid = util.getpid(),
    err = "eh_stop.s: CONSTRAINT `amount_small` failed for `eh_stop`.`s`" }

  it("task show gives the worker's last word, not 'exited unexpectedly'", function()
    local s = supervisor.effective_status(racing_store(running, stopped), { id = "t1" })
    assert.equals("stopped", s.state)
    assert.equals(stopped.err, s.err)
  end)

  it("serve sees the error too (and so does not relaunch the task)", function()
    assert.same(stopped, supervisor.status(racing_store(running, stopped), "t1"))
  end)

  it("a worker that died without a word is still reported as such", function()
    local s = supervisor.effective_status(racing_store(running, running), { id = "t1" })
    assert.equals("stopped", s.state)
    assert.matches("worker process %d+ exited unexpectedly", s.err)
  end)
end)
