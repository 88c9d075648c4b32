-- Issue 5 step 3: the subscription statements (seed 003) — parsing and errors.
local sub = require("mocdc.subscription")
local errors = require("mocdc.errors")

local function err_of(s)
  local ok, e = pcall(sub.parse, s)
  assert.is_false(ok, "expected an error for: " .. tostring(s))
  assert.equals(2, e.code)
  return errors.message(e)
end

describe("subscription statements", function()
  it("parses seed 003's CREATE SUBSCRIPTION examples", function()
    assert.same({ kind = "create", name = "sync_tpcc", database = "tpcc", level = "database", interval = 60,
      upstream = "mysql://myaccount#root:password@127.0.0.1:6001" },
      sub.parse("CREATE SUBSCRIPTION sync_tpcc\n  DATABASE tpcc\n  FROM 'mysql://myaccount#root:password@127.0.0.1:6001';"))
    assert.same({ kind = "create", name = "sync_orders", database = "tpcc", table = "orders", level = "table",
      interval = 60, upstream = "mysql://myaccount#root:password@127.0.0.1:6001" },
      sub.parse([[CREATE SUBSCRIPTION sync_orders
  DATABASE tpcc
  TABLE orders
  FROM 'mysql://myaccount#root:password@127.0.0.1:6001'
  SYNC_INTERVAL = 60;]]))
  end)

  it("accepts lower case, backquoted names, SYNC_INTERVAL without '=' and escaped quotes", function()
    local a = sub.parse("create subscription `my sub` database `shop-db` table `o``x` from \"mysql://root:p'w@h:1\" " ..
      "sync_interval 5")
    assert.equals("my sub", a.name)
    assert.equals("shop-db", a.database)
    assert.equals("o`x", a.table)
    assert.equals("mysql://root:p'w@h:1", a.upstream)
    assert.equals(5, a.interval)
    assert.equals("mysql://root:it's@h:1", sub.parse("CREATE SUBSCRIPTION s DATABASE d FROM 'mysql://root:it''s@h:1'").upstream)
  end)

  it("parses SHOW SUBSCRIPTIONS and DROP SUBSCRIPTION [IF EXISTS]", function()
    assert.same({ kind = "show" }, sub.parse("show subscriptions;"))
    assert.same({ kind = "drop", name = "sync_tpcc" }, sub.parse("DROP SUBSCRIPTION sync_tpcc"))
    assert.same({ kind = "drop", name = "x", if_exists = true }, sub.parse("drop subscription if exists x;"))
  end)

  it("says what is wrong, where", function()
    assert.equals("syntax error at position 23 near 'tpcc': expected DATABASE <db>",
      err_of("CREATE SUBSCRIPTION s tpcc FROM 'mysql://root@h:1'"))
    assert.equals("syntax error at position 33 near end of statement: expected FROM 'mysql://acc#user:pw@host:port'",
      err_of("CREATE SUBSCRIPTION s DATABASE d"))
    assert.equals("syntax error at position 39 near 'mysql': expected the upstream connection string in quotes after FROM",
      err_of("CREATE SUBSCRIPTION s DATABASE d FROM mysql://root@h:1"))
    assert.equals("syntax error at position 74 near 'soon': expected a number of seconds after SYNC_INTERVAL =",
      err_of("CREATE SUBSCRIPTION s DATABASE d FROM 'mysql://root@h:1' SYNC_INTERVAL = soon"))
    assert.equals("SYNC_INTERVAL = 0: the interval must be at least 1 second",
      err_of("CREATE SUBSCRIPTION s DATABASE d FROM 'mysql://root@h:1' SYNC_INTERVAL = 0"))
    assert.equals("syntax error at position 58 near 'EVERY': expected end of statement",
      err_of("CREATE SUBSCRIPTION s DATABASE d FROM 'mysql://root@h:1' EVERY 5"))
    assert.equals("syntax error at position 6 near 'SUBSCRIPTION': expected SUBSCRIPTIONS after SHOW",
      err_of("SHOW SUBSCRIPTION"))
    assert.equals("syntax error at position 28 near end of statement: expected a subscription name",
      err_of("DROP SUBSCRIPTION IF EXISTS"))
    assert.equals("syntax error at position 1 near 'ALTER': expected CREATE SUBSCRIPTION, SHOW SUBSCRIPTIONS or " ..
      "DROP SUBSCRIPTION (mocdc sql --help shows their syntax)", err_of("ALTER SUBSCRIPTION s"))
    assert.equals("syntax error at position 39: unterminated string starting here",
      err_of("CREATE SUBSCRIPTION s DATABASE d FROM 'mysql://root@h:1"))
    assert.matches("^FROM 'ftp://x': invalid URI", err_of("CREATE SUBSCRIPTION s DATABASE d FROM 'ftp://x'"))
    assert.matches("^no statement given", err_of("  "))
    assert.equals("syntax error at position 41: TABLE takes a table name of the DATABASE given, not db.table",
      err_of("CREATE SUBSCRIPTION s DATABASE d TABLE d.t FROM 'mysql://root@h:1'"))
  end)

  it("prints SHOW SUBSCRIPTIONS like the mysql client", function()
    local out = sub.format_table(sub.SHOW_COLUMNS, { { "s1", "mysql://root:******@h:1", "d", "*", "60", "0",
      "2025-01-01 00:00:00", "2025-01-01 00:00:00" } })
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equals(6, #lines)
    assert.matches("^| subscription_name | upstream_conn           | database | tables | sync_interval | status |", lines[2])
    assert.equals("1 row in set", lines[6])
  end)
end)
