-- Issue 9, defect 6: a ':' in a password must never be read as a MatrixOne
-- account login. The user part splits at its first ':'; the password may not
-- hold a raw ':' (written %3A), the MatrixOne login is acc#user[#role] (or
-- acc%3Auser[%3Arole]). Nothing after the first ':' is ever shown.
local uri = require("mocdc.uri")
local log = require("mocdc.log")
local cli = require("spec.support.cli")

local BAD = "mysql://root:Secr:etPart@127.0.0.1:1"
local WHY = "a ':' in the password must be written %3A (a MatrixOne login is acc#user[#role]:password)"

local function no_secret(s)
  assert.is_nil(s:find("Secr", 1, true), s)
  assert.is_nil(s:find("etPart", 1, true), s)
end

describe("issue 9: ':' in a password", function()
  it("is refused by uri.parse, the message showing nothing after the first ':' and naming %3A", function()
    local u, err = uri.parse(BAD)
    assert.is_nil(u)
    assert.are.equal("invalid URI 'mysql://root:******@127.0.0.1:1': " .. WHY, err)
    no_secret(err)
    -- more colons, same rule
    u, err = uri.parse("mysql://a:b:c:d:Secr@h:1")
    assert.is_nil(u)
    assert.are.equal("invalid URI 'mysql://a:******@h:1': " .. WHY, err)
  end)

  it("reads %3A as a ':' of the password, never as a login separator", function()
    local u = assert(uri.parse("mysql://root:Secr%3AetPart@h:1"))
    assert.are.equal("root", u.user)
    assert.are.equal("root", u.login)
    assert.is_nil(u.account)
    assert.are.equal("Secr:etPart", u.password)
    assert.are.equal("mysql://root:Secr%3AetPart@h:1", uri.format(u, { password = true }))
  end)

  it("keeps MatrixOne's acc:user[:role] login reachable as acc%3Auser", function()
    local u = assert(uri.parse("mysql://acc1%3Aadmin:111@h:1"))
    assert.are.equal("acc1", u.account)
    assert.are.equal("admin", u.user)
    assert.are.equal("acc1:admin", u.login)
    assert.are.equal("111", u.password)
    assert.are.equal("mysql://acc1%3Aadmin:******@h:1", uri.format(u))
    assert.are.equal("mysql://acc1%3Aadmin:111@h:1", uri.format(u, { password = true }))
    local r = assert(uri.parse("mysql://acc1%3Aadmin%3Aops:111@h:1"))
    assert.are.equal("ops", r.role)
    assert.are.equal("acc1:admin:ops", r.login)
  end)

  it("masks everything after the first ':' (uri.mask and log.mask)", function()
    assert.are.equal("mysql://root:******@127.0.0.1:1", uri.mask(BAD))
    assert.are.equal("x mysql://root:******@127.0.0.1:1 y", log.mask("x " .. BAD .. " y"))
    assert.are.equal("mysql://acc1#admin:******@h:1", log.mask("mysql://acc1#admin:Secr:etPart@h:1"))
    -- the password may hold '/' and '@' as they are: log.mask masks up to the last '@' too
    assert.are.equal("x mysql://root:******@h:1/db y", log.mask("x mysql://root:Se/cr@etPart@h:1/db y"))
  end)

  it("mocdc run and mocdc task create refuse it in one line, exit 2, no part of the password shown", function()
    local rc, out, err = cli.run({ "run", cli.root .. "/pipelines/full_copy.lua", "--once",
      "--set", "source_uri=" .. BAD, "--set", "sink_uri=mysql://root@127.0.0.1:1" })
    assert.are.equal("", out)
    assert.are.equal("mocdc: error: invalid source URI 'mysql://root:******@127.0.0.1:1': " .. WHY .. "\n", err)
    assert.are.equal(2, rc)
    no_secret(err)
    local home = cli.tmpdir()
    rc, out, err = cli.run({ "task", "create", "--task-name", "t1", "--source-uri", BAD,
      "--sink-uri", "mysql://root@127.0.0.1:1", "--tables", "d.t", "--level", "table" },
      { env = { MOCDC_HOME = home } })
    assert.are.equal("", out)
    assert.are.equal("mocdc: error: invalid URI 'mysql://root:******@127.0.0.1:1': " .. WHY .. "\n", err)
    assert.are.equal(2, rc)
    no_secret(err)
    os.execute("rm -rf " .. cli.q(home))
  end)
end)
