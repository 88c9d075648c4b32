-- checkpoint.lock_location / util.lock: one writer per checkpoint location (issue 9, defect 9).
local checkpoint = require("mocdc.checkpoint")
local util = require("mocdc.util.lib")

describe("checkpoint.lock_location", function()
  local dir
  before_each(function()
    local p = io.popen("mktemp -d /tmp/mocdc-lock-XXXXXX")
    dir = p:read("*l") .. "/loc/sub"
    p:close()
  end)
  after_each(function() os.execute("rm -rf " .. dir:gsub("/loc/sub$", "")) end)

  local function content(path)
    local f = assert(io.open(path, "rb"))
    local s = f:read("*a")
    f:close()
    return s
  end

  it("creates the directory, writes the holder, refuses a second holder naming the first, and releases on close", function()
    local lk = assert(checkpoint.lock_location(dir, "holder one"))
    assert.equals("holder one", content(dir .. "/lock"))
    assert.equals("mocdc.lock: held", tostring(lk))
    local lk2, err, code = checkpoint.lock_location(dir .. "/", "holder two")
    assert.is_nil(lk2)
    assert.equals("in use by holder one", err)
    assert.equals(util.EWOULDBLOCK, code)
    lk:close()
    lk:close() -- idempotent
    assert.equals("mocdc.lock: (released)", tostring(lk))
    lk2 = assert(checkpoint.lock_location(dir, "holder two"))
    assert.equals("holder two", content(dir .. "/lock"))
    lk2 = nil
    collectgarbage() collectgarbage() -- __gc releases
    assert.is_truthy(checkpoint.lock_location(dir, "three"))
  end)

  it("is held against other processes and not inherited by children", function()
    local lk = assert(checkpoint.lock_location(dir, "me"))
    -- flock(1) from another process cannot take it while we hold it
    local held = os.execute("flock -n " .. dir .. "/lock true")
    assert.is_not.equals(0, held == true and 0 or held)
    -- a child started while we hold it (close-on-exec: it gets no copy of the lock)
    local p = io.popen("sleep 5 >/dev/null 2>&1 & echo $!")
    local child = tonumber(p:read("*a"))
    p:close()
    lk:close()
    local free = os.execute("flock -n " .. dir .. "/lock true")
    util.kill(child, 9)
    assert.equals(0, free == true and 0 or free)
  end)

  it("reports an unusable location", function()
    local lk, err = checkpoint.lock_location("/proc/mocdc-no-such-dir", "me")
    assert.is_nil(lk)
    assert.matches("^cannot create /proc/mocdc%-no%-such%-dir: ", err)
  end)

  it("raises on wrong argument types", function()
    assert.has_error(function() util.lock(nil, "x") end)
    assert.has_error(function() util.lock("/tmp/x", nil) end)
  end)
end)
