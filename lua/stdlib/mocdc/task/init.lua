-- mocdc.task: tasks in three parts — task/cli.lua (`mocdc task create|show|
-- pause|resume|restart|drop`), task/worker.lua (`mocdc task-worker ID`, runs
-- one task), task/supervisor.lua (launches and watches workers; `mocdc serve`
-- for tasks) — over task/state.lua, the state store. Require the part you
-- need; this name stays because subscription/init.lua's serve runs the task
-- supervisor as mocdc.task.serve.
local cli = require("mocdc.task.cli")
local supervisor = require("mocdc.task.supervisor")
local worker = require("mocdc.task.worker")

return { main = cli.main, parse_flags = cli.parse_flags, worker = worker.run, serve = supervisor.serve }
