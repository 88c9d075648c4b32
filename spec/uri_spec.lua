-- mocdc.uri: parsing, MatrixOne login forms, options, masking, exact error messages.
local uri = require("mocdc.uri")

local EXPECTED = " (expected mysql://user:password@host:port[/database])"

describe("mocdc.uri.parse", function()
  it("parses the plain form with defaults", function()
    local u = assert(uri.parse("mysql://root:111@127.0.0.1:6001"))
    assert.are.equal("mysql", u.scheme)
    assert.are.equal("root", u.user)
    assert.are.equal("root", u.login)
    assert.are.equal("111", u.password)
    assert.are.equal("127.0.0.1", u.host)
    assert.are.equal(6001, u.port)
    assert.is_nil(u.database)
    assert.is_nil(u.account)
    assert.are.same({}, u.options)
    assert.are.equal("mysql://root:******@127.0.0.1:6001", u.masked)
  end)

  it("defaults the port to 3306 and reads the database", function()
    local u = assert(uri.parse("mysql://app:pw@db.example.com/shop"))
    assert.are.equal(3306, u.port)
    assert.are.equal("db.example.com", u.host)
    assert.are.equal("shop", u.database)
    assert.is_nil(assert(uri.parse("mysql://app:pw@h:1/")).database)
  end)

  it("accepts a user without a password", function()
    local u = assert(uri.parse("mysql://root@127.0.0.1:3306"))
    assert.are.equal("root", u.user)
    assert.is_nil(u.password)
    assert.are.equal("", assert(uri.parse("mysql://root:@h:1")).password)
  end)

  it("parses the MatrixOne acct#user form", function()
    local u = assert(uri.parse("mysql://acc1#admin:111@127.0.0.1:6001"))
    assert.are.equal("acc1", u.account)
    assert.are.equal("admin", u.user)
    assert.are.equal("acc1#admin", u.login)
    assert.are.equal("111", u.password)
    local r = assert(uri.parse("mysql://acc1#admin#accountadmin:111@127.0.0.1:6001"))
    assert.are.equal("accountadmin", r.role)
    assert.are.equal("acc1#admin#accountadmin", r.login)
  end)

  it("parses the older MatrixOne acct:user login written with %3A", function()
    local u = assert(uri.parse("mysql://acc1%3Aadmin:111@127.0.0.1:6001"))
    assert.are.equal("acc1", u.account)
    assert.are.equal("admin", u.user)
    assert.are.equal("acc1:admin", u.login)
    assert.are.equal("111", u.password)
    assert.are.equal("mysql://acc1%3Aadmin:******@127.0.0.1:6001", u.masked)
    local r = assert(uri.parse("mysql://acc1%3Aadmin%3Aops:111@h:1"))
    assert.are.equal("ops", r.role)
    assert.are.equal("acc1:admin:ops", r.login)
    assert.are.equal("111", r.password)
  end)

  it("percent-decodes user, password and database", function()
    local u = assert(uri.parse("mysql://us%65r:p%40ss%3Aw%2Fd@h:1/my%20db"))
    assert.are.equal("user", u.user)
    assert.are.equal("p@ss:w/d", u.password)
    assert.are.equal("my db", u.database)
    assert.are.equal("p@ss", assert(uri.parse("mysql://root:p%40ss@h:1")).password)
  end)

  it("takes '@', '/', '?' and '#' in a raw password (the user part ends at the last '@')", function()
    local u = assert(uri.parse("mysql://root:p@s/s?#x@127.0.0.1:3307/db?connect-timeout=5"))
    assert.are.equal("p@s/s?#x", u.password)
    assert.are.equal("127.0.0.1", u.host)
    assert.are.equal(3307, u.port)
    assert.are.equal("db", u.database)
    assert.are.equal(5, u.options.connect_timeout)
  end)

  it("reads bracketed IPv6 hosts", function()
    local u = assert(uri.parse("mysql://root:pw@[::1]:3307"))
    assert.are.equal("::1", u.host)
    assert.are.equal(3307, u.port)
    assert.are.equal(3306, assert(uri.parse("mysql://root:pw@[fe80::1%25eth0]")).port)
  end)

  it("reads options with '-' or '_' spellings", function()
    local u = assert(uri.parse("mysql://root:pw@h:1/db?ssl-mode=VERIFY_CA&ssl_ca=/etc/ca%20x.pem" ..
      "&ssl-cert=/c.pem&ssl-key=/k.pem&connect_timeout=3&read-timeout=30&write-timeout=40&charset=latin1" ..
      "&socket=/run/mysqld/mysqld.sock"))
    assert.are.same({
      ssl_mode = "verify_ca", ssl_ca = "/etc/ca x.pem", ssl_cert = "/c.pem", ssl_key = "/k.pem",
      connect_timeout = 3, read_timeout = 30, write_timeout = 40, charset = "latin1",
      socket = "/run/mysqld/mysqld.sock",
    }, u.options)
    -- the C opener's connect table (conn.lib.connect, binlog.lib.open) from the same options
    local p = require("mocdc.conn").settings(u, { password = "pw2" })
    assert.are.same({ host = "h", port = 1, user = "root", password = "pw2", database = "db",
      unix_socket = "/run/mysqld/mysqld.sock", charset = "latin1", ssl_mode = "verify_ca", ssl_ca = "/etc/ca x.pem",
      ssl_cert = "/c.pem", ssl_key = "/k.pem", connect_timeout = 3, read_timeout = 30, write_timeout = 40,
      local_infile = false }, p)
    assert.are.same({ nil, "invalid URI 'mysql://r:******@h?socket=mysqld.sock': option socket 'mysqld.sock' must " ..
      "be an absolute path to the server's unix socket" }, { uri.parse("mysql://r:p@h?socket=mysqld.sock") })
    assert.are.equal("require", assert(uri.parse("mysql://r:p@h?ssl-mode=required")).options.ssl_mode)
    assert.are.equal("disable", assert(uri.parse("mysql://r:p@h?ssl_mode=DISABLED")).options.ssl_mode)
    assert.are.equal("verify_identity",
      assert(uri.parse("mysql://r:p@h?ssl-mode=verify-identity")).options.ssl_mode)
  end)

  it("lets a password from elsewhere override the URI's", function()
    assert.are.equal("fromenv", assert(uri.parse("mysql://root@h:1", { password = "fromenv" })).password)
    assert.are.equal("fromenv", assert(uri.parse("mysql://root:old@h:1", { password = "fromenv" })).password)
    assert.are.equal("old", assert(uri.parse("mysql://root:old@h:1", {})).password)
  end)

  it("accepts the mariadb and matrixone schemes", function()
    assert.are.equal("matrixone", assert(uri.parse("MatrixOne://r:p@h:6001")).scheme)
    assert.are.equal("mariadb", assert(uri.parse("mariadb://r:p@h")).scheme)
  end)

  describe("errors name the URI with the password masked", function()
    local cases = {
      { "mysql://root:secret@127.0.0.1:abc",
        "invalid URI 'mysql://root:******@127.0.0.1:abc': port 'abc' is not a number" .. EXPECTED },
      { "mysql://root:secret@127.0.0.1:70000",
        "invalid URI 'mysql://root:******@127.0.0.1:70000': port 70000 is out of range 1-65535" .. EXPECTED },
      { "mysql://root:secret@127.0.0.1:",
        "invalid URI 'mysql://root:******@127.0.0.1:': empty port after ':'" .. EXPECTED },
      { "mysql://root:secret@:3306",
        "invalid URI 'mysql://root:******@:3306': no host after '@'" .. EXPECTED },
      { "mysql://root:secret",
        "invalid URI 'mysql://root:******': no user name (missing 'user@')" .. EXPECTED },
      { "mysql://127.0.0.1:3306",
        "invalid URI 'mysql://127.0.0.1:3306': no user name (missing 'user@')" .. EXPECTED },
      { "mysql://:secret@h:1",
        "invalid URI 'mysql://:******@h:1': no user name" .. EXPECTED },
      { "postgres://u:secret@h:5432",
        "invalid URI 'postgres://u:******@h:5432': unsupported scheme 'postgres'" .. EXPECTED },
      { "root:secret@127.0.0.1:3306",
        "invalid URI 'root:******@127.0.0.1:3306': it does not start with 'mysql://'" .. EXPECTED },
      { "", "invalid URI '': it is empty" .. EXPECTED },
      { " mysql://r:secret@h", "invalid URI ' mysql://r:******@h': it has leading or trailing spaces" .. EXPECTED },
      { "mysql://a:b:c:d:secret@h:1",
        "invalid URI 'mysql://a:******@h:1': a ':' in the password must be written %3A " ..
        "(a MatrixOne login is acc#user[#role]:password)" },
      { "mysql://#adm:secret@h:1", "invalid URI 'mysql://#adm:******@h:1': no account name before '#'" .. EXPECTED },
      { "mysql://r:secret@[::1:3306", "invalid URI 'mysql://r:******@[::1:3306': unclosed '[' in host '[::1:3306'" .. EXPECTED },
      { "mysql://r:secret@h x:1", "invalid URI 'mysql://r:******@h x:1': invalid host 'h x'" .. EXPECTED },
      { "mysql://r:secret@h:1/a/b", "invalid URI 'mysql://r:******@h:1/a/b': database name 'a/b' contains '/'" .. EXPECTED },
      { "mysql://r:secret@h:1?sslmode=on",
        "invalid URI 'mysql://r:******@h:1?sslmode=on': unknown option 'sslmode' (known: ssl-mode, ssl-ca, " ..
        "ssl-cert, ssl-key, socket, connect-timeout, read-timeout, write-timeout, charset)" },
      { "mysql://r:secret@h:1?ssl-mode=preferred",
        "invalid URI 'mysql://r:******@h:1?ssl-mode=preferred': option ssl-mode 'preferred' must be " ..
        "disable, require, verify_ca or verify_identity" },
      { "mysql://r:secret@h:1?connect-timeout=0",
        "invalid URI 'mysql://r:******@h:1?connect-timeout=0': option connect-timeout '0' must be a " ..
        "whole number of seconds > 0" },
      { "mysql://r:secret@h:1?charset=utf8;drop",
        "invalid URI 'mysql://r:******@h:1?charset=utf8;drop': option charset 'utf8;drop' must be a " ..
        "character set name like utf8mb4" },
    }
    for _, c in ipairs(cases) do
      it(c[1], function()
        local u, err = uri.parse(c[1])
        assert.is_nil(u)
        assert.are.equal(c[2], err)
        assert.is_nil(err:find("secret", 1, true))
      end)
    end
  end)

  it("raises on a non-string argument (programming error)", function()
    assert.has_error(function() uri.parse(nil) end, "bad argument #1 to 'parse' (string expected, got nil)")
    assert.has_error(function() uri.parse({}) end, "bad argument #1 to 'parse' (string expected, got table)")
  end)
end)

describe("mocdc.uri.mask", function()
  local cases = {
    { "mysql://root:111@127.0.0.1:6001", "mysql://root:******@127.0.0.1:6001" },
    { "mysql://acc1:admin:111@127.0.0.1:6001", "mysql://acc1:******@127.0.0.1:6001" },
    { "mysql://acc1#admin:111@127.0.0.1:6001/db?x=1", "mysql://acc1#admin:******@127.0.0.1:6001/db?x=1" },
    { "mysql://root:p@ss/w?rd@h:1/db", "mysql://root:******@h:1/db" },
    { "mysql://root@h:1", "mysql://root@h:1" },
    { "mysql://h:3306/db", "mysql://h:3306/db" },
    { "mysql://[::1]:3306", "mysql://[::1]:3306" },
    -- malformed: still never shows the secret
    { "mysql://root:secret", "mysql://root:******" },
    { "mysql://root:secret/db", "mysql://root:******/db" },
    { "root:secret@h:1", "root:******@h:1" },
    { "mysql://a:b:c:secret@h", "mysql://a:******@h" },
    { "garbage:secret", "garbage:******" },
    { "", "" },
  }
  for _, c in ipairs(cases) do
    it(("%q"):format(c[1]), function()
      assert.are.equal(c[2], uri.mask(c[1]))
    end)
  end
  it("accepts non-strings", function()
    assert.are.equal("nil", uri.mask(nil))
  end)
end)

describe("mocdc.uri.format", function()
  it("round-trips and masks the password unless asked", function()
    local s = "mysql://acc1#admin:p%40ss@127.0.0.1:6001/db?connect-timeout=5&ssl-mode=require"
    local u = assert(uri.parse(s))
    assert.are.equal(s, uri.format(u, { password = true }))
    assert.are.equal("mysql://acc1#admin:******@127.0.0.1:6001/db?connect-timeout=5&ssl-mode=require", uri.format(u))
    assert.are.equal("mysql://acc1%3Aadmin:******@h:1", uri.format(assert(uri.parse("mysql://acc1%3Aadmin:x@h:1"))))
    assert.are.equal("mysql://root@[::1]:3306", uri.format({ user = "root", host = "::1" }))
  end)
end)
