-- mocdc.regex / mocdc.regex.lib: PCRE2 UTF patterns, cache, error messages.
local lib = require("mocdc.regex.lib")
local regex = require("mocdc.regex")

describe("mocdc.regex.lib", function()
  it("compile returns nil and the exact PCRE2 message for a bad pattern", function()
    local re, err = lib.compile("a(b")
    assert.is_nil(re)
    assert.are.equal("invalid regex 'a(b': missing closing parenthesis at offset 3", err)
    assert.are.same({ nil, "invalid regex '*x': quantifier does not follow a repeatable item at offset 0" },
      { lib.compile("*x") })
    assert.are.same({ nil, "invalid regex '[a-': missing terminating ] for character class at offset 3" },
      { lib.compile("[a-") })
  end)

  it("raises on a non-string pattern (programming error)", function()
    assert.has_error(function() lib.compile({}) end,
      "bad argument #1 to 'compile' (string expected, got table)")
    assert.has_error(function() lib.compile() end,
      "bad argument #1 to 'compile' (string expected, got no value)")
  end)

  it("full_match anchors at both ends", function()
    local re = assert(lib.compile("orders_[0-9]+"))
    assert.is_true(re:full_match("orders_12"))
    assert.is_false(re:full_match("orders_12x"))
    assert.is_false(re:full_match("xorders_12"))
    assert.is_false(re:full_match(""))
    -- alternation must be anchored as a whole, not just its first branch
    local alt = assert(lib.compile("a|bc"))
    assert.is_true(alt:full_match("bc"))
    assert.is_false(alt:full_match("abc"))
    assert.is_false(alt:full_match("bcd"))
    -- a trailing newline is not ignored (no $ before final \n semantics)
    assert.is_false(re:full_match("orders_12\n"))
  end)

  it("find returns 1-based inclusive positions like string.find", function()
    local re = assert(lib.compile("[0-9]+"))
    assert.are.same({ 5, 7 }, { re:find("abc 123 45") })
    assert.are.same({ 9, 10 }, { re:find("abc 123 45", 8) })
    assert.are.same({ 9, 10 }, { re:find("abc 123 45", -2) })
    assert.is_nil(re:find("no digits"))
    assert.is_nil(re:find("12", 10))
    assert.are.same({ 1, 0 }, { assert(lib.compile("")):find("abc") })
  end)

  it("match returns the whole match and captures, false for unset groups", function()
    local re = assert(lib.compile("(\\w+)=(\\w+)?(x)?"))
    assert.are.same({ "k=v", "k", "v", false }, { re:match("  k=v;") })
    assert.are.same({ "k=", "k", false, false }, { re:match("k=") })
    assert.is_nil(re:match("nothing"))
  end)

  it("works in UTF-8 mode", function()
    local re = assert(lib.compile("^t.bla$"))
    assert.is_true(re:full_match("täbla")) -- one code point, two bytes
    assert.is_true(assert(lib.compile("\\p{L}+")):full_match("日本語"))
    assert.are.same({ 4, 9 }, { assert(lib.compile("日本")):find("ab 日本") })
    -- invalid UTF-8 in the subject never raises, it just cannot match there
    assert.is_false(re:full_match("t\xffbla"))
    assert.are.same({ 2, 2 }, { assert(lib.compile("b")):find("\xffb") })
    -- invalid UTF-8 in the pattern is a compile error
    local bad, err = lib.compile("a\xff")
    assert.is_nil(bad)
    assert.matches("^invalid regex 'a\xff': UTF%-8 error", err)
  end)

  it("caches compiled patterns by text and frees safely", function()
    collectgarbage()
    collectgarbage()
    lib.cache_clear()
    local before = lib.cache_stats()
    local a = assert(lib.compile("cache_me_[a-z]"))
    local b = assert(lib.compile("cache_me_[a-z]"))
    assert.are_not.equal(a, b)
    local n, refd = lib.cache_stats()
    assert.are.equal(before + 1, n)
    assert.is_true(refd >= 1)
    assert.are.equal("cache_me_[a-z]", a:pattern())
    a:free()
    a:free() -- double free is a no-op
    assert.has_error(function() a:full_match("x") end,
      "calling 'full_match' on bad self (regex already freed)")
    assert.is_true(b:full_match("cache_me_q"))
    b:free()
    a, b = nil, nil
    collectgarbage()
    collectgarbage() -- __gc after free() is fine
    lib.cache_clear()
    assert.are.equal(before, (lib.cache_stats()))
    assert.matches("^mocdc.regex: 'x'$", tostring(assert(lib.compile("x"))))
  end)

  it("type-checks the receiver", function()
    local re = assert(lib.compile("x"))
    assert.has_error(function() re.full_match({}, "x") end,
      "bad argument #1 to 'full_match' (mocdc.regex expected, got table)")
    assert.has_error(function() re:find(nil) end,
      "bad argument #1 to 'find' (string expected, got nil)")
  end)

  it("is fast on repeated matches (JIT, no per-call allocation)", function()
    local re = assert(lib.compile("^db[0-9]+\\.t_[a-z]+$"))
    local hits = 0
    for i = 1, 200000 do
      if re:full_match("db" .. (i % 7) .. ".t_abc") then hits = hits + 1 end
    end
    assert.are.equal(200000, hits)
  end)
end)

describe("mocdc.regex", function()
  it("full_match/find/match convenience compile through the cache", function()
    assert.is_true(regex.full_match("a.c", "abc"))
    assert.is_false(regex.full_match("a.c", "abcd"))
    assert.are.same({ 2, 3 }, { regex.find("b+", "abbc") })
    assert.are.same({ "42" }, { regex.match("\\d+", "x42") })
  end)

  it("raises the compile message for a bad pattern in convenience calls", function()
    local ok, err = pcall(regex.full_match, "a(b", "x")
    assert.is_false(ok)
    assert.matches("invalid regex 'a%(b': missing closing parenthesis at offset 3$", err)
  end)

  it("compile keeps the nil, msg contract", function()
    assert.are.same({ nil, "invalid regex 'a(b': missing closing parenthesis at offset 3" },
      { regex.compile("a(b") })
  end)

  it("escape quotes metacharacters", function()
    local p = regex.escape("a.b*c(d)[e]{1}|^$+?\\")
    assert.is_true(regex.full_match(p, "a.b*c(d)[e]{1}|^$+?\\"))
    assert.is_false(regex.full_match(regex.escape("a.b"), "axb"))
  end)
end)
