-- mocdc.util.lib's hex rule: the one encoder of bytes as text in the Lua layer.
local util = require("mocdc.util.lib")

describe("mocdc.util.lib hex/unhex", function()
  it("round-trips every byte value", function()
    local all = {}
    for i = 0, 255 do all[#all + 1] = string.char(i) end
    local s = table.concat(all)
    local h = util.hex(s)
    assert.are.equal(512, #h)
    assert.are.equal("000102", h:sub(1, 6))
    assert.are.equal("ff", h:sub(-2))
    assert.are.equal(s, util.unhex(h))
    assert.are.equal("", util.hex(""))
    assert.are.equal("", util.unhex(""))
  end)

  it("reads upper-case digits and refuses what is not hex", function()
    assert.are.equal("\10\171", util.unhex("0AaB"))
    assert.are.same({ nil, "unhex: odd number of hex digits" }, { util.unhex("abc") })
    assert.are.same({ nil, "unhex: not a hex digit" }, { util.unhex("zz") })
  end)
end)
