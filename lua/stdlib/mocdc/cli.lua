local M = {}
function M.main(args) print("mocdc") return 0 end
return M
