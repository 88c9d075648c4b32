-- Unit specs of the retry policy (mocdc.pipeline.retry) and the one table of transient
-- errors (errors.transient): the decision is taken from errno / sqlstate,
-- never from the message text. Issue 9 defect 3 / issue 10 item 2.
local errors = require("mocdc.errors")
local retry = require("mocdc.pipeline.retry")

local function raised(fn)
  local ok, e = pcall(fn)
  assert.is_false(ok)
  return e
end

describe("errors: the error shape", function()
  it("raise_sql keeps errno and sqlstate unchanged, exit 1", function()
    local e = raised(function() errors.raise_sql("sink x: boom", 1205, "HY000") end)
    assert.same({ "sink x: boom", 1, 1205, "HY000" }, { e.msg, e.exit, e.errno, e.sqlstate })
    assert.is_true(errors.is(e))
  end)
  it("raise(msg, exit) is a configuration / interrupt error without errno", function()
    local e = raised(function() errors.raise("bad option", 2) end)
    assert.same({ "bad option", 2, 2 }, { e.msg, e.exit, e.code })
    assert.is_nil(e.errno)
    -- an errno never becomes an exit code
    e = raised(function() errors.raise("lost", { errno = 2 }) end)
    assert.same({ 1, 2 }, { e.exit, e.errno })
  end)
end)

describe("errors.retryable: one table by errno / sqlstate", function()
  it("retries the transient errnos of the README", function()
    for _, n in ipairs({ 1205, 1213, 1043, 1053, 1927, 2002, 2003, 2006, 2013, 2055 }) do
      assert.is_true(errors.retryable({ errno = n }), "errno " .. n)
    end
    assert.equals("lock", errors.transient(1205))
    assert.equals("lock", errors.transient(1213))
    assert.equals("connection", errors.transient(2013))
    assert.equals("lock", errors.transient(nil, "40001"))
    assert.equals("connection", errors.transient(9999, "08S01"))
  end)
  it("never decides by message text", function()
    assert.is_false(errors.retryable({ msg = "Lost connection to server during query" }))
    assert.is_false(errors.retryable("Deadlock found when trying to get lock"))
    assert.is_false(errors.retryable({ errno = 1045, msg = "Lost connection" })) -- access denied
    for _, n in ipairs({ 1044, 1045, 1049, 1062, 1142, 1146, 2000, 4025 }) do
      assert.is_false(errors.retryable({ errno = n }), "errno " .. n)
    end
  end)
end)

describe("retry policy", function()
  it("waits 200 ms doubling to 30 s, then stops after the limit", function()
    local p = retry.new({ maxRetries = 12 })
    local e = { errno = 2013 }
    local delays = {}
    for _ = 1, 12 do delays[#delays + 1] = p:failed(e) end
    assert.same({ 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30, 30, 30, 30 }, delays)
    assert.is_nil(p:failed(e))
    assert.equals(12, p.attempt)
  end)
  it("defaults to 10 retries; a non-transient error stops at once", function()
    local p = retry.new({})
    assert.equals(10, p.limit)
    assert.is_nil(p:failed({ errno = 1062 }))
    assert.equals(0, p.attempt)
    assert.is_nil(retry.new({ maxRetries = 0 }):failed({ errno = 2013 }))
  end)
  it("progress resets the count and the delay", function()
    local p = retry.new({ maxRetries = 3 })
    p:failed({ errno = 1213 })
    p:failed({ errno = 1213 })
    assert.equals(2, p:recovered())
    assert.equals(0.2, p:failed({ errno = 1213 }))
  end)
  it("refuses a maxRetries that is not a number >= 0 (exit 2)", function()
    local e = raised(function() retry.new({ maxRetries = "many" }) end)
    assert.same({ "option maxRetries = 'many' must be a number >= 0", 2 }, { e.msg, e.exit })
  end)
end)
