-- mocdc.conn / mocdc.conn.lib without a server: argument checks, exact failure
-- messages for malformed URIs and unreachable ports, sql_mode fixing.
-- With a real server: spec/integration/conn_spec.lua.
local lib = require("mocdc.conn.lib")
local conn = require("mocdc.conn")
local cjson = require("cjson")

-- a port nothing listens on: bind an ephemeral one, note it, let it go
local function dead_port()
  local p = io.popen("python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\",0)); " ..
    "print(s.getsockname()[1])' 2>/dev/null")
  local port = p and tonumber(p:read("*a"))
  if p then p:close() end
  return port or 1
end

describe("mocdc.conn.lib", function()
  it("NULL is a NULL lightuserdata equal to cjson.null", function()
    assert.are.equal("userdata", type(lib.NULL))
    assert.are.equal(cjson.null, lib.NULL)
    assert.are.equal(lib.NULL, conn.NULL)
  end)

  it("raises on wrong argument types (programming errors)", function()
    assert.has_error(function() lib.connect() end, "bad argument #1 to 'connect' (table expected, got no value)")
    assert.has_error(function() lib.connect({ host = 5 }) end, "connect: field 'host' must be a string, got number")
    assert.has_error(function() lib.connect({ port = "x" }) end, "connect: field 'port' must be a number")
    assert.has_error(function() lib.connect({ port = 70000 }) end, "connect: port 70000 is out of range")
    assert.has_error(function() lib.connect({ ssl_mode = "on" }) end,
      "connect: ssl_mode must be disable, require, verify_ca or verify_identity, got 'on'")
    -- numbers may come as numeric strings (pipeline options from --set): a refused port, not a raise
    assert.are.equal(2002, select(3, lib.connect({ host = "127.0.0.1", port = tostring(dead_port()),
      connect_timeout = "2", read_timeout = "30" })))
  end)

  it("returns nil, message, errno, sqlstate for a refused connection", function()
    local port = dead_port()
    local c, err, errno, sqlstate = lib.connect{ host = "127.0.0.1", port = port, user = "root", password = "s3cret" }
    assert.is_nil(c)
    assert.are.equal(("cannot connect to root@127.0.0.1:%d: Can't connect to server on '127.0.0.1' (111 \"Connection refused\")"):format(port), err)
    assert.are.equal(2002, errno)
    assert.are.equal("HY000", sqlstate)
  end)

  it("TLS files without an ssl_mode, or unreadable ones, fail before connecting (errno 2026)", function()
    assert.are.same({ nil, "cannot connect to root@127.0.0.1:1: ssl-ca is given but ssl-mode is disable: add " ..
      "ssl-mode=require, verify_ca or verify_identity", 2026, "HY000" },
      { lib.connect{ host = "127.0.0.1", port = 1, user = "root", ssl_ca = "/etc/ssl/certs/ca-certificates.crt" } })
    assert.are.same({ nil, "cannot connect to root@127.0.0.1:1: ssl-key file '/nonexistent/k.pem' cannot be read: " ..
      "No such file or directory", 2026, "HY000" },
      { lib.connect{ host = "127.0.0.1", port = 1, user = "root", ssl_mode = "require", ssl_key = "/nonexistent/k.pem" } })
  end)

  it("verify_ca without a CA fails before connecting", function()
    assert.are.same({ nil, "cannot connect to root@127.0.0.1:1: ssl-mode verify_ca needs ssl-ca (the CA certificate file)", 2026,
      "HY000" },
      { lib.connect{ host = "127.0.0.1", port = 1, user = "root", ssl_mode = "verify_ca" } })
  end)
end)

describe("mocdc.conn.open", function()
  it("reports a malformed URI in one line, password masked, with the role", function()
    assert.are.same({ nil, "invalid sink URI 'mysql://root:******@127.0.0.1:abc': port 'abc' is not a number " ..
      "(expected mysql://user:password@host:port[/database])" },
      { conn.open("mysql://root:s3cret@127.0.0.1:abc", { role = "sink" }) })
    assert.are.same({ nil, "invalid URI 'mysql://root:******': no user name (missing 'user@') " ..
      "(expected mysql://user:password@host:port[/database])" },
      { conn.open("mysql://root:s3cret") })
  end)

  it("reports an unreachable server with role and user@host:port, never the password", function()
    local port = dead_port()
    local c, err, errno = conn.open(("mysql://acc1#admin:s3cret@127.0.0.1:%d"):format(port), { role = "source" })
    assert.is_nil(c)
    assert.are.equal(("cannot connect to source acc1#admin@127.0.0.1:%d: Can't connect to server on '127.0.0.1' (111 \"Connection refused\")")
      :format(port), err)
    assert.are.equal(2002, errno)
  end)

  it("raises on a target that is neither a string nor a table", function()
    assert.has_error(function() conn.open(42) end, "bad argument #1 to 'open' (URI string or table expected, got number)")
  end)
end)

describe("mocdc.conn.fix_sql_mode", function()
  it("drops NO_BACKSLASH_ESCAPES and makes sure a strict mode is on", function()
    assert.are.equal("STRICT_TRANS_TABLES", conn.fix_sql_mode(""))
    assert.are.equal("STRICT_TRANS_TABLES", conn.fix_sql_mode(nil))
    assert.are.equal("ANSI_QUOTES,STRICT_TRANS_TABLES", conn.fix_sql_mode("NO_BACKSLASH_ESCAPES,ANSI_QUOTES"))
    assert.are.equal("STRICT_ALL_TABLES,NO_ZERO_DATE", conn.fix_sql_mode("STRICT_ALL_TABLES,NO_BACKSLASH_ESCAPES,NO_ZERO_DATE"))
    local mdb_default = "STRICT_TRANS_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_AUTO_CREATE_USER,NO_ENGINE_SUBSTITUTION"
    assert.are.equal(mdb_default, conn.fix_sql_mode(mdb_default))
  end)
end)

describe("mocdc.conn.load_data_sql", function()
  it("spells out the text format and routes BIT columns through a variable", function()
    local cols = { { name = "id", class = "num" }, { name = "fl`ag", class = "bit" }, { name = "s", class = "str" } }
    assert.are.equal("LOAD DATA LOCAL INFILE 'mocdc://stream' REPLACE INTO TABLE `d`.`t` CHARACTER SET binary " ..
      "FIELDS TERMINATED BY '\\t' ENCLOSED BY '' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' STARTING BY '' " ..
      "(`id`, @v2, `s`) SET `fl``ag` = CAST(@v2 AS UNSIGNED)",
      conn.load_data_sql("`d`.`t`", cols, { mode = "replace" }))
    assert.are.equal("LOAD DATA LOCAL INFILE 'mocdc://stream' INTO TABLE t CHARACTER SET binary " ..
      "FIELDS TERMINATED BY '\\t' ENCLOSED BY '' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' STARTING BY '' (`a`)",
      conn.load_data_sql("t", { { name = "a", class = "str" } }))
  end)
end)
