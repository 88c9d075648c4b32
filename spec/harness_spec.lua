-- The integration-test harness itself: real mariadbd servers per spec.
local mdb = require("spec.helpers.mariadb")
local util = require("mocdc.util.lib")

local function proc_alive(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local state = f:read("*a"):match("^%d+ %b() (%a)")
  f:close()
  return state ~= "Z"
end

mdb.describe("spec.helpers.mariadb", function()
  local src, dst

  -- every spec starts from these two servers and d.t (in any order: the stop_all spec starts
  -- them again)
  local function start_servers()
    src = mdb.start{ name = "source", binlog = true, extra = { "binlog_row_metadata=FULL", "--gtid-strict-mode=1" } }
    dst = mdb.start{ name = "sink" }
    src:sql([[CREATE DATABASE d;
      CREATE TABLE d.t (id INT PRIMARY KEY, s VARCHAR(20), b VARBINARY(10));
      INSERT INTO d.t VALUES (1, 'a', NULL), (2, 'NULL', 'x'), (3, NULL, '');]])
  end
  setup(start_servers)

  it("starts two servers on distinct free ports; the documented fields are what the servers say", function()
    assert.are_not.equal(src.port, dst.port)
    assert.is_true(src:running() and dst:running())
    -- each field checked against the server it names (not against what the harness set)
    for _, srv in ipairs({ src, dst }) do
      local c = assert(require("mocdc.conn").open(srv.uri)) -- uri: host, user, password, port
      local r = c:query("SELECT @@port, @@datadir, @@socket, @@log_error, @@server_id, @@hostname IS NOT NULL, " ..
        "CURRENT_USER(), @@pid_file")
      c:close()
      assert.are.same({ tostring(srv.port), srv.datadir .. "/", srv.socket, srv.log, tostring(srv.server_id), "1",
        "root@%", srv.dir .. "/mariadbd.pid" }, r[1])
      local h = assert(require("mocdc.conn.lib").connect(srv:conn_opts()))
      assert.are.same({ { tostring(srv.port) } }, h:query("SELECT @@port"))
      h:close()
      assert.is_true(util.exists(srv.datadir .. "/mysql"))
    end
    -- the process really is mariadbd with our datadir, not the system service
    local f = assert(io.open("/proc/" .. src.pid .. "/cmdline"))
    local cmd = f:read("*a"):gsub("%z", " ")
    f:close()
    assert.matches("mariadbd", cmd)
    assert.matches(src.cnf, cmd, 1, true)
  end)

  it("configures binlog only where asked", function()
    assert.are.same({ { "1", "ROW", "FULL", "FULL", "1", "0", tostring(src.port) } },
      src:rows("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata, " ..
        "@@gtid_strict_mode, @@log_slave_updates, @@server_id"))
    assert.are.same({ { "0", "utf8mb4", "utf8mb4_general_ci", "1", "67108864", "1", "127.0.0.1" } },
      dst:rows("SELECT @@log_bin, @@character_set_server, @@collation_server, @@local_infile, " ..
        "@@max_allowed_packet, @@skip_name_resolve, @@bind_address"))
    assert.are.equal("134217728\t67108864\n",
      dst:sql("SELECT @@innodb_buffer_pool_size, @@innodb_log_file_size"))
  end)

  it("requires the password (real authentication)", function()
    local out = io.popen("mariadb --no-defaults --protocol=TCP -h127.0.0.1 -P" .. src.port ..
      " -uroot -pwrong -e 'select 1' 2>&1"):read("*a")
    assert.matches("Access denied for user 'root'@'127.0.0.1'", out, 1, true)
  end)

  it("sql runs multi-statement text and raises the server's message", function()
    assert.are.equal("", src:sql([[
      CREATE DATABASE ms;
      CREATE TABLE ms.t (id INT PRIMARY KEY, s VARCHAR(20), b VARBINARY(10));
      INSERT INTO ms.t VALUES (1, 'a', NULL), (2, 'NULL', 'x'), (3, NULL, '');
    ]]))
    assert.are.equal("1\ta\tNULL\n", src:sql("SELECT * FROM t WHERE id = 1", "ms"))
    local ok, err = pcall(src.sql, src, "SELEC 1")
    assert.is_false(ok)
    assert.matches("^spec/harness_spec.lua:%d+: source: ERROR 1064 %(42000%) at line 1: You have an error in your SQL syntax.*near 'SELEC 1' at line 1$", err)
    ok, err = pcall(src.sql, src, "SELECT * FROM nope.t")
    assert.matches("source: ERROR 1146 (42S02) at line 1: Table 'nope.t' doesn't exist", err, 1, true)
  end)

  it("rows tells SQL NULL from the string 'NULL' and keeps bytes exact", function()
    local rows, names = src:rows("SELECT id, s, b FROM d.t ORDER BY id")
    assert.are.same({ "id", "s", "b" }, names)
    assert.are.same({ { "1", "a", mdb.NULL }, { "2", "NULL", "x" }, { "3", mdb.NULL, "" } }, rows)
    assert.are.equal(require("cjson").null, mdb.NULL)
    rows = src:rows([[SELECT 'a<b>&"c''d', 'l1\nl2\tt\\', X'FFC3A9', _utf8mb4'日本', 1.50, '' AS `we<ird`]])
    assert.are.same({ { 'a<b>&"c\'d', "l1\nl2\tt\\", "\255\195\169", "日本", "1.50", "" } }, rows)
    assert.are.same({}, (src:rows("SELECT 1 FROM DUAL WHERE 0")))
  end)

  it("restarts on the same datadir and port after stop and after kill", function()
    local port, old = src.port, src.pid
    src:stop()
    assert.is_false(proc_alive(old))
    assert.is_false(src:running())
    src:start_again()
    assert.are.equal(port, src.port)
    assert.are_not.equal(old, src.pid)
    assert.are.same({ { "3" } }, src:rows("SELECT COUNT(*) FROM d.t"))
    src:sql("CREATE TABLE d.r (id INT PRIMARY KEY); INSERT INTO d.r VALUES (4)")
    old = src.pid
    src:kill()
    assert.is_false(proc_alive(old))
    src:start_again() -- crash recovery
    assert.are.same({ { "4" } }, src:rows("SELECT * FROM d.r"))
    src:sql("DROP TABLE d.r")
    assert.are.same({ { "1", "ROW" } }, src:rows("SELECT @@log_bin, @@binlog_format"))
  end)

  it("stop_all leaves no process and removes the dirs", function()
    local pids, dirs = { src.pid, dst.pid }, { src.dir, dst.dir }
    mdb.stop_all()
    for _, pid in ipairs(pids) do assert.is_false(proc_alive(pid)) end
    for _, d in ipairs(dirs) do assert.is_false(util.exists(d)) end
    -- a fresh server after stop_all still works (new run dir)
    start_servers()
    assert.are.equal("source", src.name)
    assert.are.equal("sink", dst.name)
    assert.are.same({ { "0" } }, dst:rows("SELECT @@log_bin"))
  end)
end)
