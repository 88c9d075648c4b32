-- Child process for spec/checkpoint_spec.lua's crash test (run as
-- `mocdc busted spec/helpers/checkpoint_writer.lua`; not a spec itself).
-- Loops forever committing set_many{a=i, b=i, c=i, pad=...} and appends each
-- acknowledged i to $CP_ACK, until it is killed.
local checkpoint = require("mocdc.checkpoint")
local store = assert(checkpoint.open(assert(os.getenv("CP_PATH"))))
local ack = assert(io.open(assert(os.getenv("CP_ACK")), "w"))
ack:setvbuf("no")
local pad = string.rep("x", 4000)
local i = 0
while true do
  i = i + 1
  local s = tostring(i)
  assert(store:set_many({ a = s, b = s, c = s, pad = pad .. s }))
  ack:write(s, "\n")
end
