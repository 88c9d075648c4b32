-- mocdc command line: dispatches to run / task / sql / serve / version / help.
local M = {}

function M.main(args)
  local cmd = args[1]
  if cmd == "busted" then
    -- test runner inside the host, so specs can require the native modules
    local rest = {}
    for i = 2, #args do rest[#rest + 1] = args[i] end
    rest[0] = "busted"
    _G.arg = rest
    require("busted.runner")({ standalone = false })
    return 0
  end
  print("mocdc")
  return 0
end

return M
