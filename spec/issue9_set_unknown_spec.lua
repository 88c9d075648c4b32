-- Issue 9, defect 8: a --set name the pipeline never reads (a typo such as
-- `tabels`) is refused, naming the variables it does read (exit 2). A name is
-- read when, by the end of the script's run (the declaration phase), it was
-- looked up with var(), declared with set{...} or read as vars.NAME, or the
-- script iterated vars (pairs / next / ipairs: it may read any name).
-- streamName is always known (it names the pipeline).
local pipeline = require("mocdc.pipeline.env")
local errors = require("mocdc.errors")
local cli = require("spec.support.cli")

local HINT = "; a transform must read its variables while the script declares: local x = var \"x\")"

local files = {}
local function script(body)
  local p = os.tmpname() .. ".lua"
  local f = assert(io.open(p, "w"))
  f:write(body, '\nsave.append(load.snapshot { uri = "mysql://u:p@h:1" }, "mysql://u:p@h:2")\n')
  f:close()
  files[#files + 1] = p
  return p
end

local function refused(path, sets)
  local ok, e = pcall(pipeline.declare, path, sets)
  assert.is_false(ok)
  assert.is_true(errors.is(e), tostring(e))
  assert.are.equal(2, e.code)
  return e.msg
end

describe("issue 9: --set of a variable the pipeline never reads", function()
  teardown(function() for _, p in ipairs(files) do os.remove(p) end end)

  it("is refused, naming the unknown name (never its value) and the known ones", function()
    local p = script('local t = var("tables", "a.b")\nlocal c = vars.checkpoint\nset { mode_x = "1" }')
    assert.are.equal(string.format("--set tabels: %s never reads a variable 'tabels' " ..
      "(it reads: checkpoint, mode_x, streamName, tables" .. HINT, p),
      refused(p, { tabels = "s3cret.t", tables = "x.y" }))
    -- several: all named, sorted
    assert.are.equal(string.format("--set tabels, zz: %s never reads a variable 'tabels' or 'zz' " ..
      "(it reads: checkpoint, mode_x, streamName, tables" .. HINT, p),
      refused(p, { zz = "1", tabels = "s3cret.t" }))
  end)

  it("accepts names read by var(), vars.NAME, declared by set{}, and streamName", function()
    local p = script('local t = var("tables", "a.b")\nlocal c = vars.checkpoint\nset { mode_x = "1" }')
    local ctx = pipeline.declare(p, { tables = "x.y", checkpoint = "/tmp/x", mode_x = "2", streamName = "s1" })
    assert.are.equal("x.y", ctx.vars.tables)
    assert.are.equal("2", ctx.vars.mode_x) -- --set wins over set{}
    assert.are.equal("s1", ctx.name)
  end)

  it("counts iterating vars as reading every name", function()
    for _, body in ipairs({ "for k, v in pairs(vars) do end", "local k = next(vars)",
      "for _, v in ipairs(vars) do end" }) do
      local p = script(body)
      local ctx = pipeline.declare(p, { anything = "1" })
      assert.are.equal("1", ctx.vars.anything)
    end
    -- and iteration sees the --set values
    local p = script('local seen = {}\nfor k, v in pairs(vars) do seen[#seen + 1] = k .. "=" .. v end\n' ..
      'table.sort(seen)\nset { joined = table.concat(seen, ",") }')
    assert.are.equal("a=1,b=2", pipeline.declare(p, { a = "1", b = "2" }).vars.joined)
  end)

  it("refuses a name read only later, inside a transform (read it while the script declares)", function()
    local p = os.tmpname() .. ".lua"
    files[#files + 1] = p
    local f = assert(io.open(p, "w"))
    f:write('local s = load.snapshot { uri = "mysql://u:p@h:1" }\n' ..
      'save.append(s:map(function(r) r.x = var("suffix", "") return r end), "mysql://u:p@h:2")\n')
    f:close()
    assert.are.equal(string.format("--set suffix: %s never reads a variable 'suffix' (it reads: streamName" .. HINT, p),
      refused(p, { suffix = "_v2" }))
  end)

  it("mocdc run refuses a --set typo in one line, exit 2, before connecting", function()
    local path = cli.root .. "/pipelines/full_copy.lua"
    local rc, out, err = cli.run({ "run", path, "--set", "tabels=d.t", "--set", "sink_uri=mysql://root@127.0.0.1:1" })
    assert.are.equal("", out)
    assert.are.equal(string.format("mocdc: error: --set tabels: %s never reads a variable 'tabels' " ..
      "(it reads: checkpoint, chunk_size, sink_uri, source_uri, streamName, tables" .. HINT .. "\n", path), err)
    assert.are.equal(2, rc)
  end)
end)
