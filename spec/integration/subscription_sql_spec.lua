-- Issue 9: `mocdc sql` (README "Subscriptions") with exact output: SHOW
-- SUBSCRIPTIONS as a table and with --batch, DROP SUBSCRIPTION [IF EXISTS],
-- CREATE's line, the one-line errors and their exit codes, and the downstream
-- password from MOCDC_SINK_PASSWORD.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")

local function last_line(s) return s:match("([^\n]*)\n$") end

mdb.describe("mocdc sql: subscriptions, exact output (issue 9)", function()
  local up, down

  setup(function()
    up = mdb.start({ name = "sql-up" })
    down = mdb.start({ name = "sql-down" })
    up:sql("CREATE DATABASE d1; CREATE DATABASE d2; CREATE TABLE d2.t (id INT PRIMARY KEY)")
  end)

  local function sql(stmt, ...)
    local args = { "sql", "--sink-uri", down.uri }
    for _, a in ipairs({ ... }) do args[#args + 1] = a end
    args[#args + 1] = stmt
    return cli.run(args)
  end

  -- rc, then stderr is exactly one line `mocdc: error: <msg>`
  local function fails(rc_want, msg, args, env)
    local rc, out, err = cli.run(args, env and { env = env })
    assert.equals(rc_want, rc, err)
    assert.equals("", out)
    assert.is_true(cli.one_line(err), err)
    assert.equals("mocdc: error: " .. msg, last_line(err))
  end

  it("refuses bad invocations and statements with one line (exit 2), an unreachable downstream with exit 1", function()
    local u = down.uri
    fails(2, "no statement given: expected CREATE SUBSCRIPTION, SHOW SUBSCRIPTIONS or DROP SUBSCRIPTION " ..
      "(mocdc sql --help shows their syntax)", { "sql", "--sink-uri", u })
    fails(2, "syntax error at position 1 near 'SELECT': expected CREATE SUBSCRIPTION, SHOW SUBSCRIPTIONS or DROP " ..
      "SUBSCRIPTION (mocdc sql --help shows their syntax)", { "sql", "--sink-uri", u, "SELECT 1" })
    fails(2, "syntax error at position 6 near end of statement: expected SUBSCRIPTIONS after SHOW",
      { "sql", "--sink-uri", u, "SHOW " })
    fails(2, "syntax error at position 18 near ';': expected a subscription name",
      { "sql", "--sink-uri", u, "DROP SUBSCRIPTION;" })
    fails(2, "unknown option --sink (mocdc sql --help)", { "sql", "--sink", u, "SHOW SUBSCRIPTIONS" })
    fails(2, "give one statement (in quotes)", { "sql", "--sink-uri", u, "SHOW", "SUBSCRIPTIONS" })
    fails(2, "mocdc sql needs --sink-uri URI: the downstream server (mysql://user@host:port)", { "sql", "SHOW SUBSCRIPTIONS" })
    fails(2, "invalid downstream URI 'mysql//root@x': it does not start with 'mysql://' (expected " ..
      "mysql://user:******@host:port[/database])", { "sql", "--sink-uri", "mysql//root@x", "SHOW SUBSCRIPTIONS" })
    -- a downstream that does not answer is a runtime error, not a usage error
    local closed = down.uri:gsub(":%d+$", ":1")
    local rc, _, err = cli.run({ "sql", "--sink-uri", closed, "SHOW SUBSCRIPTIONS" })
    assert.equals(1, rc, err)
    assert.is_true(cli.one_line(err), err)
    assert.matches("^mocdc: error: cannot connect to downstream root@127.0.0.1:1: ", last_line(err))
    assert.not_matches(mdb.PASSWORD, err)
    local rc2, out2 = cli.run({ "sql", "--help" })
    assert.equals(0, rc2)
    assert.matches("^Usage: mocdc sql %-%-sink%-uri mysql://user:pw@host:port \"STATEMENT\"\n", out2)
  end)

  it("CREATE, SHOW (table and --batch), DROP [IF EXISTS] print exactly this", function()
    local header = "| subscription_name | upstream_conn                       | database | tables | sync_interval " ..
      "| status | create_time         | update_time         |"
    local rule = "+-------------------+-------------------------------------+----------+--------+---------------" ..
      "+--------+---------------------+---------------------+"
    local empty_header = "| subscription_name | upstream_conn | database | tables | sync_interval | status | create_time " ..
      "| update_time |"
    local empty_rule = "+-------------------+---------------+----------+--------+---------------+--------+-------------" ..
      "+-------------+"
    local rc, out, err = sql("SHOW SUBSCRIPTIONS")
    assert.equals(0, rc, err)
    assert.equals(table.concat({ empty_rule, empty_header, empty_rule, empty_rule, "0 rows in set", "" }, "\n"), out)
    assert.equals("", err)

    local masked = "mysql://root:******@127.0.0.1:" .. up.port
    assert.equals(35, #masked) -- the harness's ports have 5 digits: the table below is laid out for that
    rc, out, err = sql("CREATE SUBSCRIPTION zz_all DATABASE d1 FROM '" .. up.uri .. "'")
    assert.equals(0, rc, err)
    assert.equals("", out)
    assert.equals("subscription 'zz_all' created: database d1 from " .. masked .. " every 60 s (run mocdc serve " ..
      "--state-uri on this downstream to sync)\n", err)
    rc, out, err = sql("create subscription `a one` database d2 table t from '" .. up.uri .. "' sync_interval = 5;")
    assert.equals(0, rc, err)
    assert.equals("subscription 'a one' created: table d2.t from " .. masked .. " every 5 s (run mocdc serve " ..
      "--state-uri on this downstream to sync)\n", err)

    -- a table of zz_all whose last iteration failed: its status is 2
    down:sql("INSERT INTO mocdc.mo_sync_tasks (task_id, db_name, table_id, table_name, iteration_state, error_message) " ..
      "SELECT task_id, 'd1', 1, 'x', 'error', 'boom' FROM mocdc.mo_sync_configs WHERE subscription_name = 'zz_all'")
    local times = down:rows("SELECT subscription_name, DATE_FORMAT(created_at, '%Y-%m-%d %H:%i:%s'), " ..
      "DATE_FORMAT(updated_at, '%Y-%m-%d %H:%i:%s') FROM mocdc.mo_sync_configs ORDER BY subscription_name")
    local function row(name, db, tables, interval, status, t)
      return string.format("| %-17s | %s | %-8s | %-6s | %-13s | %-6s | %s | %s |", name, masked, db, tables, interval,
        status, t[2], t[3])
    end
    rc, out, err = sql("SHOW SUBSCRIPTIONS")
    assert.equals(0, rc, err)
    assert.equals(table.concat({ rule, header, rule, row("a one", "d2", "t", "5", "0", times[1]),
      row("zz_all", "d1", "*", "60", "2", times[2]), rule, "2 rows in set", "" }, "\n"), out)
    assert.not_matches(mdb.PASSWORD, out)
    rc, out = sql("show subscriptions", "--batch")
    assert.equals(0, rc)
    assert.equals(table.concat({
      "subscription_name\tupstream_conn\tdatabase\ttables\tsync_interval\tstatus\tcreate_time\tupdate_time",
      "a one\t" .. masked .. "\td2\tt\t5\t0\t" .. times[1][2] .. "\t" .. times[1][3],
      "zz_all\t" .. masked .. "\td1\t*\t60\t2\t" .. times[2][2] .. "\t" .. times[2][3], "" }, "\n"), out)

    -- DROP removes the subscription, its jobs and its diff state, nothing else
    down:sql([[CREATE TABLE IF NOT EXISTS mocdc.diff_state (pipeline VARCHAR(128) NOT NULL, source_table VARCHAR(400)
        NOT NULL, state LONGTEXT NOT NULL, updated_at DATETIME(6) NOT NULL, PRIMARY KEY (pipeline, source_table));
      INSERT INTO mocdc.diff_state SELECT CONCAT('sub:', task_id), 'job:1', '{}', NOW() FROM mocdc.mo_sync_configs;]])
    rc, out, err = sql("DROP SUBSCRIPTION zz_all")
    assert.equals(0, rc, err)
    assert.equals("", out)
    assert.equals("subscription 'zz_all' dropped (the downstream tables are kept)\n", err)
    assert.same({ { "a one" } }, down:rows("SELECT subscription_name FROM mocdc.mo_sync_configs"))
    assert.same({ { "0" } }, down:rows("SELECT COUNT(*) FROM mocdc.mo_sync_tasks"))
    assert.same({ { "1" } }, down:rows("SELECT COUNT(*) FROM mocdc.diff_state"))
    rc, out, err = sql("DROP SUBSCRIPTION IF EXISTS zz_all")
    assert.equals(0, rc, err)
    assert.equals("subscription 'zz_all' does not exist\n", err)
    fails(2, "subscription 'zz_all' does not exist (SHOW SUBSCRIPTIONS lists them)",
      { "sql", "--sink-uri", down.uri, "DROP SUBSCRIPTION zz_all" })
    fails(2, "subscription 'a one' already exists (DROP SUBSCRIPTION a one first)",
      { "sql", "--sink-uri", down.uri, "CREATE SUBSCRIPTION `a one` DATABASE d1 FROM '" .. up.uri .. "'" })
    rc, out = sql("SHOW SUBSCRIPTIONS")
    assert.equals(0, rc)
    assert.equals(table.concat({ rule, header, rule, row("a one", "d2", "t", "5", "0", times[1]), rule, "1 row in set", "" },
      "\n"), out)
    rc, _, err = sql("DROP SUBSCRIPTION `a one`")
    assert.equals(0, rc, err)
    assert.same({ { "0" } }, down:rows("SELECT COUNT(*) FROM mocdc.diff_state"))
  end)

  it("reads the downstream password from MOCDC_SINK_PASSWORD when the URI has none", function()
    local bare = down.uri:gsub("root:[^@]*@", "root@")
    local rc, out, err = cli.run({ "sql", "--sink-uri", bare, "--batch", "SHOW SUBSCRIPTIONS" },
      { env = { MOCDC_SINK_PASSWORD = mdb.PASSWORD } })
    assert.equals(0, rc, err)
    assert.equals("subscription_name\tupstream_conn\tdatabase\ttables\tsync_interval\tstatus\tcreate_time\tupdate_time\n",
      out)
    rc, out, err = cli.run({ "sql", "--sink-uri", bare, "SHOW SUBSCRIPTIONS" },
      { env = { MOCDC_SINK_PASSWORD = "not-" .. mdb.PASSWORD } })
    assert.equals(1, rc, err)
    assert.equals("", out)
    assert.is_true(cli.one_line(err), err)
    assert.matches("^mocdc: error: cannot connect to downstream root@127.0.0.1:%d+: Access denied for user 'root'",
      last_line(err))
    assert.not_matches(mdb.PASSWORD, err)
  end)
end)
