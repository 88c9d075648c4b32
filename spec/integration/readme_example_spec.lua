-- The pipeline shown in README.md ("Pipelines") works as written: binlog source
-- in MLSQL option style, filter + map transforms, {table} target pattern.
local mdb = require("spec.helpers.mariadb")
local cli = require("spec.support.cli")

mdb.describe("README pipeline example", function()
  local src, sink, dir
  setup(function()
    src = mdb.start({ name = "readme-source", binlog = true })
    sink = mdb.start({ name = "readme-sink" })
    dir = cli.tmpdir()
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  it("filters, masks and routes to analytics_db.{table}_backup, then streams changes", function()
    src:sql([[CREATE DATABASE source_db;
      CREATE TABLE source_db.orders (order_id INT PRIMARY KEY, email VARCHAR(50), status VARCHAR(20));
      INSERT INTO source_db.orders VALUES (1, 'alice@example.com', 'New'), (2, 'bob@x.org', 'Test'),
        (3, 'carol@y.net', 'Shipped');]])
    -- the README's text, with this test's ports and a password from the environment
    local f = io.open("README.md"):read("*a")
    local code = f:match("```lua\n(set { streamName = \"orders\" }.-)```")
    assert.is_not_nil(code, "README example not found")
    code = code:gsub("port = 3306", "port = " .. src.port)
      :gsub('userName = "repl"', 'userName = "root"')
      :gsub("mysql://root@127%.0%.0%.1:3307", "mysql://root:" .. mdb.PASSWORD .. "@127.0.0.1:" .. sink.port)
      :gsub("/var/lib/mocdc/orders", dir .. "/cp")
    local p = dir .. "/readme.lua"
    local fh = io.open(p, "w")
    fh:write(code)
    fh:close()
    local env = { PW = mdb.PASSWORD, MOCDC_HOME = dir }
    local rc, _, err = cli.run({ "run", p, "--once" }, { env = env })
    assert.equals(0, rc, err)
    src:sql([[INSERT INTO source_db.orders VALUES (4, 'dan@z.com', 'New');
      UPDATE source_db.orders SET status = 'Shipped' WHERE order_id = 1; DELETE FROM source_db.orders WHERE order_id = 3;]])
    rc, _, err = cli.run({ "run", p, "--once" }, { env = env })
    assert.equals(0, rc, err)
    assert.same({ { "1", "a****@example.com", "Shipped" }, { "4", "d**@z.com", "New" } },
      (sink:rows("SELECT * FROM analytics_db.orders_backup ORDER BY order_id")))
  end)
end)
