-- TLS on every connection mocdc opens (issue 10 item 3): the snapshot source, the binlog stream,
-- the sink and a --state-uri store, against real mariadbd servers started with certificates
-- generated here with openssl (a CA, a server certificate for 127.0.0.1 / localhost, a wrong CA,
-- a client certificate) and users created REQUIRE SSL / REQUIRE X509, so a plaintext connection
-- is refused by the server. The server is asked, connection by connection, whether it is encrypted
-- (performance_schema Ssl_cipher per thread, the binlog dump thread included).
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")
local conn = require("mocdc.conn")
local binlog = require("mocdc.binlog")
local util = require("mocdc.util.lib")
local cjson = require("cjson")

local eventually, q = cli.eventually, cli.q
local PW = "Tls-S3cret-pw"   -- never printed: asserted absent from every output
local X509PW = "X509-S3cret-pw"

local function sh(cmd)
  local p = assert(io.popen("( " .. cmd .. " ) 2>&1; echo \"__rc=$?\""))
  local out = p:read("*a")
  p:close()
  local body, rc = out:match("^(.-)__rc=(%d+)\n?$")
  assert(tonumber(rc) == 0, cmd .. ": " .. tostring(body))
  return body
end

-- A CA, a wrong CA, server certificates (`names`: CN -> SAN) and a client certificate, all signed
-- by the CA (the wrong CA signs nothing).
local function make_certs(dir)
  local function req(name, cn)
    sh(string.format("cd %s && openssl req -newkey rsa:2048 -nodes -keyout %s-key.pem -out %s.csr -subj %s",
      q(dir), name, name, q("/CN=" .. cn)))
  end
  local function sign(name, ext)
    local extf = ""
    if ext then
      sh(string.format("printf '%%s\\n' %s > %s/%s.ext", q(ext), q(dir), name))
      extf = " -extfile " .. name .. ".ext"
    end
    sh(string.format("cd %s && openssl x509 -req -in %s.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial " ..
      "-out %s.pem -days 2%s", q(dir), name, name, extf))
  end
  for _, ca in ipairs({ "ca", "wrong-ca" }) do
    sh(string.format("cd %s && openssl req -x509 -newkey rsa:2048 -nodes -keyout %s-key.pem -out %s.pem -days 2 " ..
      "-subj %s", q(dir), ca, ca, q("/CN=mocdc spec " .. ca)))
  end
  req("server", "127.0.0.1")
  sign("server", "subjectAltName=IP:127.0.0.1,DNS:localhost")
  req("other", "db.example.invalid") -- a valid certificate for another host name
  sign("other", "subjectAltName=DNS:db.example.invalid")
  req("client", "mocdc client")
  sign("client")
  return {
    ca = dir .. "/ca.pem", wrong_ca = dir .. "/wrong-ca.pem",
    client_cert = dir .. "/client.pem", client_key = dir .. "/client-key.pem",
    server = { cert = dir .. "/server.pem", key = dir .. "/server-key.pem" },
    other = { cert = dir .. "/other.pem", key = dir .. "/other-key.pem" },
  }
end

local function tls_server(name, certs, which, binlog_on)
  return mdb.start{ name = name, binlog = binlog_on, extra = {
    "ssl-ca=" .. certs.ca, "ssl-cert=" .. certs[which].cert, "ssl-key=" .. certs[which].key,
    "performance_schema=ON" } }
end

-- Every connection of `user` on the server: { {command, ssl_cipher}, ... }.
local function sessions(srv, user)
  return (srv:rows("SELECT t.PROCESSLIST_COMMAND, IFNULL(s.VARIABLE_VALUE, '') FROM performance_schema.threads t " ..
    "LEFT JOIN performance_schema.status_by_thread s ON s.THREAD_ID = t.THREAD_ID AND s.VARIABLE_NAME = 'Ssl_cipher' " ..
    "WHERE t.PROCESSLIST_USER = '" .. user .. "' ORDER BY t.THREAD_ID"))
end

-- The connections of `user` on srv once `want` (a command, e.g. "Binlog Dump", or nil) is among
-- them; each one must be encrypted.
local function assert_all_encrypted(srv, user, want)
  local rows = eventually(function()
    local r = sessions(srv, user)
    if #r == 0 then return false end
    if want then
      local seen = false
      for _, row in ipairs(r) do seen = seen or row[1] == want end
      if not seen then return false end
    end
    return r
  end, 30, string.format("%s connections of %s on %s", want or "any", user, srv.name))
  for _, row in ipairs(rows) do
    assert.are_not.equal("", row[2], string.format("a %s connection of %s on %s is not encrypted", row[1], user,
      srv.name))
  end
  return rows
end

local function no_password(...)
  for i = 1, select("#", ...) do
    local s = select(i, ...)
    assert.is_nil(s:find(PW, 1, true), "password printed: " .. s)
    assert.is_nil(s:find(X509PW, 1, true), "password printed: " .. s)
  end
end

mdb.describe("TLS on every connection (issue 10)", function()
  local certs, src, dst, home
  local function uri(srv, user, pw, query)
    return string.format("mysql://%s:%s@127.0.0.1:%d?%s", user, pw, srv.port, query)
  end
  local function verify_identity(srv)
    return uri(srv, "tls", PW, "ssl-mode=verify_identity&ssl-ca=" .. certs.ca)
  end

  setup(function()
    home = cli.tmpdir()
    certs = make_certs(home)
    src = tls_server("tls-src", certs, "server", true)
    dst = tls_server("tls-dst", certs, "server", false)
    for _, srv in ipairs({ src, dst }) do
      srv:sql("CREATE USER tls@'%' IDENTIFIED BY '" .. PW .. "' REQUIRE SSL; GRANT ALL ON *.* TO tls@'%';" ..
        "CREATE USER x509@'%' IDENTIFIED BY '" .. X509PW .. "' REQUIRE X509; GRANT ALL ON *.* TO x509@'%'")
    end
  end)
  teardown(function() os.execute("rm -rf " .. q(home)) end)

  local function fresh(db)
    src:sql(string.format("DROP DATABASE IF EXISTS %s; CREATE DATABASE %s; CREATE TABLE %s.t (id INT PRIMARY KEY, " ..
      "v VARCHAR(20)); INSERT INTO %s.t VALUES (1, 'a'), (2, 'b'), (3, 'c')", db, db, db, db))
    dst:sql("DROP DATABASE IF EXISTS " .. db)
  end
  local function sink_rows(db)
    local ok, rows = pcall(dst.rows, dst, "SELECT id, v FROM " .. db .. ".t ORDER BY id")
    return ok and rows or {}
  end
  local function run_once(source_uri, sink_uri, db, cp)
    return cli.run({ "run", "pipelines/binlog_to_mysql.lua", "--set", "source_uri=" .. source_uri,
      "--set", "sink_uri=" .. sink_uri, "--set", "tables=" .. db .. ".t", "--set", "checkpoint=" .. cp, "--once" },
      { env = { MOCDC_HOME = home } })
  end

  it("the plaintext connection of a REQUIRE SSL user is refused (so every check below means TLS)", function()
    local c, err, code = conn.open(uri(src, "tls", PW, "ssl-mode=disable"), { role = "source" })
    assert.is_nil(c)
    assert.equals(1045, code)
    assert.equals(string.format("cannot connect to source tls@127.0.0.1:%d: Access denied for user 'tls'@'127.0.0.1' " ..
      "(using password: YES)", src.port), err)
  end)

  it("verify_identity: snapshot, binlog stream (changes arrive) and sink, every connection encrypted", function()
    fresh("tv")
    local logf = home .. "/verify_identity.log"
    local pid, rc_of = cli.spawn_rc({ "run", "pipelines/binlog_to_mysql.lua", "--set", "source_uri=" ..
      verify_identity(src), "--set", "sink_uri=" .. verify_identity(dst), "--set", "tables=tv.t",
      "--set", "checkpoint=" .. home .. "/cp-tv" }, logf, { env = { MOCDC_HOME = home } })
    local ok, err = pcall(function()
      eventually(function() return #sink_rows("tv") == 3 end, 30, "the full copy")
      src:sql("INSERT INTO tv.t VALUES (4, 'd'), (5, 'e'); UPDATE tv.t SET v = 'B' WHERE id = 2; DELETE FROM tv.t WHERE id = 3")
      eventually(function()
        return cjson.encode(sink_rows("tv")) == cjson.encode({ { "1", "a" }, { "2", "B" }, { "4", "d" }, { "5", "e" } })
      end, 30, "the binlog changes in the sink")
      -- the binlog dump thread and the other source connections, the sink's
      assert_all_encrypted(src, "tls", "Binlog Dump")
      assert_all_encrypted(dst, "tls")
    end)
    util.kill(pid, 15)
    local rc = eventually(rc_of, 30, "mocdc to exit after SIGTERM")
    local log = io.open(logf):read("*a")
    assert(ok, tostring(err) .. "\n" .. log)
    no_password(log)
    assert.matches("stopped at ", log, 1, true) -- at a safe point, not a broken TLS read
    assert.equals(130, rc, log)
  end)

  it("ssl-cert / ssl-key: a REQUIRE X509 user reads the snapshot and the binlog", function()
    fresh("tx")
    local source = uri(src, "x509", X509PW, "ssl-mode=verify_identity&ssl-ca=" .. certs.ca .. "&ssl-cert=" ..
      certs.client_cert .. "&ssl-key=" .. certs.client_key)
    local cp = home .. "/cp-tx"
    local rc, out, err = run_once(source, verify_identity(dst), "tx", cp)
    assert.equals(0, rc, err)
    assert.same({ { "1", "a" }, { "2", "b" }, { "3", "c" } }, sink_rows("tx"))
    src:sql("INSERT INTO tx.t VALUES (7, 'g')")
    rc, out, err = run_once(source, verify_identity(dst), "tx", cp) -- from the binlog, no copy
    assert.equals(0, rc, err)
    assert.matches("1 change(s) applied", out .. err, 1, true)
    assert.same({ { "1", "a" }, { "2", "b" }, { "3", "c" }, { "7", "g" } }, sink_rows("tx"))
    no_password(out, err)
    -- without the client certificate the X509 user is refused, by the binlog stream too
    local h, berr, code = binlog.open{ host = "127.0.0.1", port = src.port, user = "x509", password = X509PW,
      ssl_mode = "verify_identity", ssl_ca = certs.ca }
    assert.is_nil(h)
    assert.equals(1045, code)
    assert.equals(string.format("cannot connect to binlog source x509@127.0.0.1:%d: Access denied for user " ..
      "'x509'@'127.0.0.1' (using password: YES)", src.port), berr)
  end)

  for _, mode in ipairs({ "require", "verify_ca" }) do
    it("ssl-mode=" .. mode .. " succeeds for the copy and the binlog stream", function()
      local db = "t_" .. mode
      fresh(db)
      local query = "ssl-mode=" .. mode .. (mode == "verify_ca" and ("&ssl-ca=" .. certs.ca) or "")
      local s, d, cp = uri(src, "tls", PW, query), uri(dst, "tls", PW, query), home .. "/cp-" .. mode
      local rc, _, err = run_once(s, d, db, cp)
      assert.equals(0, rc, err)
      src:sql("INSERT INTO " .. db .. ".t VALUES (9, 'i')")
      local out
      rc, out, err = run_once(s, d, db, cp)
      assert.equals(0, rc, err)
      assert.matches("1 change(s) applied", out .. err, 1, true)
      assert.equals(4, #sink_rows(db))
    end)
  end

  it("a --state-uri store over verify_identity: a task's worker, source, binlog and sink all encrypted", function()
    src:sql("DROP DATABASE IF EXISTS ts; CREATE DATABASE ts; CREATE TABLE ts.t (id INT PRIMARY KEY, v VARCHAR(20));" ..
      "INSERT INTO ts.t VALUES (1, 'a')")
    dst:sql("DROP DATABASE IF EXISTS ts_copy; DROP DATABASE IF EXISTS mocdc")
    local function task(args)
      args[#args + 1] = "--state-uri"
      args[#args + 1] = verify_identity(dst)
      local rc, out, err = cli.run(args, { env = { MOCDC_HOME = home } })
      no_password(out, err)
      assert.equals(0, rc, err)
      return out
    end
    task({ "task", "create", "--task-name", "tlstask", "--source-uri", verify_identity(src), "--sink-uri",
      verify_identity(dst), "--tables", "ts.t:ts_copy.t" })
    local ok, err = pcall(function()
      local qs = "SELECT id, v FROM ts_copy.t ORDER BY id"
      eventually(function() return #dst:rows(qs) == 1 end, 30, "the task's full copy")
      src:sql("INSERT INTO ts.t VALUES (2, 'b')")
      eventually(function() return #dst:rows(qs) == 2 end, 30, "the task's binlog change")
      local list = cjson.decode(task({ "task", "show", "--all", "--source-uri", verify_identity(src) }))
      assert.equals("running", list[1].state)
      assert.equals("1", dst:rows("SELECT COUNT(*) FROM mocdc.state WHERE k LIKE 'task/%/config'")[1][1])
      assert_all_encrypted(src, "tls", "Binlog Dump")
      assert_all_encrypted(dst, "tls")
    end)
    task({ "task", "drop", "--all", "--source-uri", verify_identity(src) })
    assert(ok, err)
  end)

  describe("refused, with one line naming the connection, exit 2, no password", function()
    local function assert_refused(source_uri, sink_uri, line)
      local rc, out, err = run_once(source_uri, sink_uri, "tw", home .. "/cp-wrong")
      no_password(out, err)
      assert.equals(2, rc, err)
      assert.is_true(cli.one_line(err), err)
      assert.equals("mocdc: error: " .. line, err:match("([^\n]*)\n$"))
    end
    setup(function() fresh("tw") end)

    it("a wrong CA for the source (verify_ca) or the sink (verify_identity)", function()
      local wrong = "ssl-ca=" .. certs.wrong_ca
      assert_refused(uri(src, "tls", PW, "ssl-mode=verify_ca&" .. wrong), verify_identity(dst),
        string.format("cannot connect to source tls@127.0.0.1:%d: TLS/SSL error: self-signed certificate in " ..
          "certificate chain (ssl-mode verify_ca: check that ssl-ca %s signed the server's certificate)",
          src.port, certs.wrong_ca))
      assert_refused(verify_identity(src), uri(dst, "tls", PW, "ssl-mode=verify_identity&" .. wrong),
        string.format("cannot connect to sink tls@127.0.0.1:%d: TLS/SSL error: self-signed certificate in " ..
          "certificate chain (ssl-mode verify_identity: check that ssl-ca %s signed the server's certificate " ..
          "and that it names 127.0.0.1)", dst.port, certs.wrong_ca))
    end)

    it("an ssl-ca file that cannot be read", function()
      assert_refused(uri(src, "tls", PW, "ssl-mode=verify_ca&ssl-ca=" .. home .. "/missing-ca.pem"),
        verify_identity(dst), string.format("cannot connect to source tls@127.0.0.1:%d: ssl-ca file '%s' cannot " ..
          "be read: No such file or directory", src.port, home .. "/missing-ca.pem"))
    end)

    it("a wrong CA for the --state-uri store", function()
      local rc, out, err = cli.run({ "task", "show", "--all", "--source-uri", verify_identity(src), "--state-uri",
        uri(dst, "tls", PW, "ssl-mode=verify_ca&ssl-ca=" .. certs.wrong_ca) }, { env = { MOCDC_HOME = home } })
      no_password(out, err)
      assert.equals(2, rc, err)
      assert.equals(string.format("mocdc: error: cannot connect to state store tls@127.0.0.1:%d: TLS/SSL error: " ..
        "self-signed certificate in certificate chain (ssl-mode verify_ca: check that ssl-ca %s signed the " ..
        "server's certificate)\n", dst.port, certs.wrong_ca), err)
    end)

    it("a subscription downstream (mocdc sql): verify_identity works, a wrong CA is refused", function()
      local rc, out, err = cli.run({ "sql", "--sink-uri", verify_identity(dst), "SHOW SUBSCRIPTIONS" },
        { env = { MOCDC_HOME = home } })
      no_password(out, err)
      assert.equals(0, rc, err)
      rc, out, err = cli.run({ "sql", "--sink-uri", uri(dst, "tls", PW, "ssl-mode=verify_ca&ssl-ca=" .. certs.wrong_ca),
        "SHOW SUBSCRIPTIONS" }, { env = { MOCDC_HOME = home } })
      no_password(out, err)
      assert.equals(2, rc, err)
      assert.equals(string.format("mocdc: error: cannot connect to downstream tls@127.0.0.1:%d: TLS/SSL error: " ..
        "self-signed certificate in certificate chain (ssl-mode verify_ca: check that ssl-ca %s signed the " ..
        "server's certificate)\n", dst.port, certs.wrong_ca), err)
    end)

    it("a binlog stream with a wrong CA", function()
      local h, err, code = binlog.open{ host = "127.0.0.1", port = src.port, user = "tls", password = PW,
        ssl_mode = "verify_ca", ssl_ca = certs.wrong_ca }
      assert.is_nil(h)
      assert.equals(2026, code)
      assert.equals(string.format("cannot connect to binlog source tls@127.0.0.1:%d: TLS/SSL error: self-signed " ..
        "certificate in certificate chain (ssl-mode verify_ca: check that ssl-ca %s signed the server's " ..
        "certificate)", src.port, certs.wrong_ca), err)
    end)
  end)

  describe("a server whose certificate names another host", function()
    local other
    setup(function()
      other = tls_server("tls-other", certs, "other", false)
      other:sql("CREATE USER tls@'%' IDENTIFIED BY '" .. PW .. "' REQUIRE SSL; GRANT ALL ON *.* TO tls@'%'")
    end)

    it("verify_ca accepts it, verify_identity refuses it with one line", function()
      local c = assert(conn.open(uri(other, "tls", PW, "ssl-mode=verify_ca&ssl-ca=" .. certs.ca), { role = "sink" }))
      assert.are_not.equal("", c:query_one("SHOW SESSION STATUS LIKE 'Ssl_cipher'")[2])
      c:close()
      local c2, err, code = conn.open(verify_identity(other), { role = "sink" })
      assert.is_nil(c2)
      assert.equals(2026, code)
      assert.equals(string.format("cannot connect to sink tls@127.0.0.1:%d: TLS/SSL error: Validation of SSL server " ..
        "certificate failed (ssl-mode verify_identity: check that ssl-ca %s signed the server's certificate and " ..
        "that it names 127.0.0.1)", other.port, certs.ca), err)
    end)
  end)

  it("a unix socket (?socket=) for queries and the binlog stream; the URI's TCP port is then unused", function()
    fresh("tu")
    local s = string.format("mysql://root:%s@localhost:1?socket=%s", mdb.PASSWORD, src.socket)
    local c = assert(conn.open(s, { role = "source" }))
    assert.equals("root@localhost", c:query_one("SELECT CURRENT_USER()")[1])
    c:close()
    local cp = home .. "/cp-tu"
    local rc, _, err = run_once(s, verify_identity(dst), "tu", cp)
    assert.equals(0, rc, err)
    src:sql("INSERT INTO tu.t VALUES (8, 'h')")
    local out
    rc, out, err = run_once(s, verify_identity(dst), "tu", cp)
    assert.equals(0, rc, err)
    assert.matches("1 change(s) applied", out .. err, 1, true)
    assert.equals(4, #sink_rows("tu"))
  end)

  it("the binlog stream parses the connection options of queries (one parser in C)", function()
    assert.has_error(function() binlog.open{ host = "127.0.0.1", port = src.port, ssl_mode = "on" } end,
      "binlog.open: ssl_mode must be disable, require, verify_ca or verify_identity, got 'on'")
    assert.has_error(function() binlog.open{ host = "127.0.0.1", port = src.port, unix_socket = 5 } end,
      "binlog.open: field 'unix_socket' must be a string, got number")
  end)
end)
