-- mocdc.checkpoint / mocdc.checkpoint.lib: SQLite WAL key/value store.
local lib = require("mocdc.checkpoint.lib")
local checkpoint = require("mocdc.checkpoint")
local util = require("mocdc.util.lib")

local function tmpdir()
  local p = io.popen("mktemp -d /tmp/mocdc-cp-spec-XXXXXX")
  local d = p:read("*l")
  p:close()
  return d
end

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("*a")
  p:close()
  return out
end

-- pid exists and is not a zombie (a killed orphan stays a zombie until init reaps it)
local function alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local state = f:read("*a"):match("^%d+ %b() (%a)")
  f:close()
  return state ~= "Z" and state ~= "X"
end

describe("mocdc.checkpoint", function()
  local dir
  before_each(function() dir = tmpdir() end)
  after_each(function() os.execute("rm -rf '" .. dir .. "'") end)

  it("opens in WAL mode with synchronous=FULL and one kv table, creating parent dirs", function()
    local path = dir .. "/a/b/checkpoint.db"
    local store = assert(checkpoint.open(path))
    assert.is_true(util.exists(path))
    assert.is_true(store:set("k", "v"))
    assert.are.equal("wal\n", sh("sqlite3 '" .. path .. "' 'PRAGMA journal_mode'"))
    assert.are.equal("CREATE TABLE kv(key TEXT PRIMARY KEY, value TEXT);\n",
      sh("sqlite3 '" .. path .. "' .schema"))
    assert.matches("^mocdc.checkpoint: .*/a/b/checkpoint.db$", tostring(store))
    store:close()
  end)

  it("open_location uses <dir>/checkpoint.db", function()
    local store = assert(checkpoint.open_location(dir .. "/loc/"))
    store:close()
    assert.is_true(util.exists(dir .. "/loc/checkpoint.db"))
  end)

  it("get/set/delete round-trip bytes exactly and persist across reopen", function()
    local path = dir .. "/checkpoint.db"
    local store = assert(checkpoint.open(path))
    assert.is_nil(store:get("missing"))
    local bin = "a\0b\255\n'\"" .. string.rep("z", 100000)
    assert.is_true(store:set("bin", bin))
    assert.is_true(store:set("num", 42))
    assert.is_true(store:set("empty", ""))
    assert.are.equal(bin, store:get("bin"))
    assert.are.equal("42", store:get("num"))
    assert.are.equal("", store:get("empty"))
    assert.is_true(store:set("num", "43")) -- overwrite
    store:close()
    store = assert(checkpoint.open(path))
    assert.are.equal("43", store:get("num"))
    assert.are.equal(bin, store:get("bin"))
    assert.is_true(store:delete("num"))
    assert.is_true(store:delete("num")) -- deleting an absent key is fine
    assert.is_nil(store:get("num"))
    store:close()
  end)

  it("keys/items/delete_prefix select exactly the keys with the prefix", function()
    local store = assert(checkpoint.open(dir .. "/checkpoint.db"))
    assert.is_true(store:set_many({
      ["t1.pos"] = "1", ["t1.key"] = "k1", ["t10.pos"] = "10", ["t1"] = "x", ["t2.pos"] = "2",
      ["t1%_"] = "like", ["\255\255"] = "ff", ["\255\255a"] = "ffa", ["u"] = "u",
    }))
    assert.are.same({ "t1.key", "t1.pos" }, store:keys("t1."))
    assert.are.same({ "t1", "t1%_", "t1.key", "t1.pos", "t10.pos" }, store:keys("t1"))
    assert.are.same({ "t1%_" }, store:keys("t1%"))
    assert.are.same({ "\255\255", "\255\255a" }, store:keys("\255\255"))
    assert.are.same({ ["t1.key"] = "k1", ["t1.pos"] = "1" }, store:items("t1."))
    assert.are.equal(9, #store:keys())
    assert.are.equal(9, #store:keys(""))
    assert.are.equal(2, store:delete_prefix("t1."))
    assert.are.same({ "t1", "t1%_", "t10.pos" }, store:keys("t1"))
    assert.are.equal(2, store:delete_prefix("\255"))
    assert.are.equal(0, store:delete_prefix("nope"))
    assert.are.equal(5, store:delete_prefix(""))
    assert.are.same({}, store:keys())
    store:close()
  end)

  it("set_many is all or nothing when a value has the wrong type", function()
    local store = assert(checkpoint.open(dir .. "/checkpoint.db"))
    assert.is_true(store:set("a", "old"))
    assert.has_error(function()
      store:set_many({ a = "new", b = "new", c = {} })
    end, "bad argument #1 to 'set_many' (value for key 'c': string expected, got table)")
    assert.has_error(function()
      store:set_many({ a = "new", "positional" })
    end, "bad argument #1 to 'set_many' (key must be a string, got number)")
    assert.are.equal("old", store:get("a"))
    assert.is_nil(store:get("b"))
    -- the store is still usable (no transaction left open)
    assert.is_true(store:set_many({ a = "1", b = "2" }))
    assert.are.same({ a = "1", b = "2" }, store:items())
    store:close()
  end)

  it("set_many rolls back when SQLite fails in the middle of the transaction", function()
    local path = dir .. "/checkpoint.db"
    local store = assert(checkpoint.open(path))
    assert.is_true(store:set("a", "old"))
    -- a trigger makes the insert of key 'boom' fail, whichever order pairs() visits
    assert.are.equal("", sh("sqlite3 '" .. path .. "' \"CREATE TRIGGER boom BEFORE INSERT ON kv " ..
      "WHEN NEW.key = 'boom' BEGIN SELECT RAISE(ABORT, 'refused'); END\""))
    local ok, err, code = store:set_many({ a = "new", b = "new", boom = "x", c = "new" })
    assert.is_nil(ok)
    assert.are.equal("checkpoint set_many: refused", err)
    assert.are.equal(1811, code) -- SQLITE_CONSTRAINT_TRIGGER
    assert.are.same({ a = "old" }, store:items())
    assert.is_true(store:set_many({ a = "1", b = "2" }))
    assert.are.same({ a = "1", b = "2" }, store:items())
    store:close()
  end)

  local eventually = require("spec.support.cli").eventually

  -- Another process holds the write lock (BEGIN IMMEDIATE) until the returned
  -- release() is called (at most 30 s); returns once the lock is held.
  local function hold_lock(path)
    local sql, marker, release = dir .. "/lock.sql", dir .. "/locked", dir .. "/release"
    os.remove(marker)
    os.remove(release)
    local f = assert(io.open(sql, "w"))
    f:write("BEGIN IMMEDIATE;\nINSERT INTO kv VALUES('x','y');\n.shell touch '", marker, "'\n",
      ".shell i=0; while [ ! -e '", release, "' ] && [ $i -lt 3000 ]; do sleep 0.01; i=$((i+1)); done\nCOMMIT;\n")
    f:close()
    os.execute("sqlite3 '" .. path .. "' <'" .. sql .. "' >/dev/null 2>&1 &")
    eventually(function() return util.exists(marker) end, 10, "the sqlite3 lock holder to hold the lock")
    return function(after) os.execute("(sleep " .. (after or 0) .. "; touch '" .. release .. "') &") end
  end

  it("waits for a concurrent writer (busy_timeout)", function()
    local path = dir .. "/checkpoint.db"
    local store = assert(checkpoint.open(path))
    assert.is_true(store:set("a", "1"))
    local release = hold_lock(path)
    -- without a busy timeout this fails at once with "database is locked" (the lock is held
    -- until the release, 0.3 s from now)
    release(0.3)
    assert.is_true(store:set_many({ a = "2" }))
    assert.are.same({ a = "2", x = "y" }, store:items())
    store:close()
  end)

  it("returns nil, msg, code when the lock is not released within busy_timeout", function()
    local path = dir .. "/checkpoint.db"
    local store = assert(checkpoint.open(path, 100))
    assert.is_true(store:set("a", "1"))
    local release = hold_lock(path) -- held until release(), however slow this process is
    local r1 = { store:set_many({ a = "2" }) }
    local r2 = { store:set("a", "2") }
    local a = store:get("a") -- readers are not blocked in WAL mode
    release()
    assert.are.same({ nil, "checkpoint set_many: database is locked", 5 }, r1)
    assert.are.same({ nil, "checkpoint set: database is locked", 5 }, r2)
    assert.are.equal("1", a)
    eventually(function() return store:set_many({ a = "3" }) end, 10, "the write after the lock's release")
    assert.are.same({ a = "3", x = "y" }, store:items())
    store:close()
  end)

  it("returns nil, msg when the file cannot be opened", function()
    local f = io.open(dir .. "/file", "w")
    f:close()
    local store, err = checkpoint.open(dir .. "/file/checkpoint.db")
    assert.is_nil(store)
    assert.are.equal("cannot open checkpoint " .. dir .. "/file/checkpoint.db: unable to open database file", err)
    store, err = checkpoint.open(dir .. "/file/sub/checkpoint.db")
    assert.is_nil(store)
    assert.are.equal("cannot open checkpoint " .. dir .. "/file/sub/checkpoint.db: cannot create directory "
      .. dir .. "/file/sub: Not a directory", err)
    local s2, err2 = lib.open(dir .. "/nodir/checkpoint.db") -- the C layer does not mkdir
    assert.is_nil(s2)
    assert.are.equal("cannot open checkpoint " .. dir .. "/nodir/checkpoint.db: unable to open database file", err2)
  end)

  it("close is idempotent and a closed store raises on use", function()
    local store = assert(checkpoint.open(dir .. "/checkpoint.db"))
    store:close()
    store:close()
    assert.has_error(function() store:get("a") end,
      "calling 'get' on bad self (checkpoint store is closed)")
    assert.has_error(function() store.get({}, "a") end,
      "bad argument #1 to 'get' (mocdc.checkpoint expected, got table)")
    store = nil
    collectgarbage()
    collectgarbage()
  end)

  it("argument errors raise", function()
    local store = assert(checkpoint.open(dir .. "/checkpoint.db"))
    assert.has_error(function() store:set("a", nil) end,
      "bad argument #2 to 'set' (string expected, got nil)")
    assert.has_error(function() store:set_many("x") end,
      "bad argument #1 to 'set_many' (table expected, got string)")
    assert.has_error(function() checkpoint.open(nil) end,
      "bad argument #1 to 'open' (checkpoint path expected, got nil)")
    store:close()
  end)

  it("a writer killed with SIGKILL leaves the last committed set_many intact", function()
    local src = debug.getinfo(1, "S").source:sub(2)
    local root = src:match("^(.*)/spec/[^/]*$") or "."
    local path, ackf = dir .. "/checkpoint.db", dir .. "/ack"
    local pid = tonumber(sh(string.format(
      "CP_PATH='%s' CP_ACK='%s' '%s' busted '%s/spec/helpers/checkpoint_writer.lua' >'%s/child.log' 2>&1 </dev/null & echo $!",
      path, ackf, util.exe_path(), root, dir)))
    assert.is_number(pid)
    -- let it commit a good number of transactions, then kill it mid-flight
    local acked = 0
    local ok, err = pcall(eventually, function()
      local f = io.open(ackf)
      if f then
        for l in f:lines() do acked = tonumber(l) or acked end
        f:close()
      end
      return acked >= 20
    end, 10, "20 acknowledged transactions")
    assert.is_true(util.kill(pid, 9))
    eventually(function() return not alive(pid) end, 10, "the writer to die")
    assert(ok, tostring(err) .. ": " .. sh("cat '" .. dir .. "/child.log'"))
    for l in io.lines(ackf) do acked = tonumber(l) or acked end

    local store = assert(checkpoint.open(path))
    local items = store:items()
    local n = tonumber(items.a)
    assert.is_true(n >= acked and n <= acked + 1, "committed " .. tostring(n) .. ", acknowledged " .. acked)
    assert.are.same({ a = items.a, b = items.a, c = items.a, pad = string.rep("x", 4000) .. items.a }, items)
    assert.are.equal("ok\n", sh("sqlite3 '" .. path .. "' 'PRAGMA integrity_check'"))
    store:close()
  end)
end)
