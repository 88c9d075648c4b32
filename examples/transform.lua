-- examples/transform.lua — a full copy with custom Lua transforms:
--   * drop test orders           (filter)
--   * mask the customer's email  (map)
--   * rename a column            (rename: the sink table is created with the new name)
--
-- Source table (see examples/orders_demo.sh for a runnable setup):
--   CREATE TABLE shop.customers (id INT PRIMARY KEY, name VARCHAR(50), email VARCHAR(100), status VARCHAR(20));
--
--   mocdc run examples/transform.lua --set source_uri=mysql://root:pw@127.0.0.1:3306 \
--        --set sink_uri=mysql://root:pw@127.0.0.1:3307
local customers = load.snapshot {
  uri = var("source_uri"),
  tables = var("tables", "shop.customers:analytics_db.customers_clean"),
}

local clean = customers
  :filter(function(r) return r.status ~= "Test" end)          -- drop rows
  :map(function(r)
    r.email = mask(r.email)                                    -- "alice@example.com" -> "a****@example.com"
    return r
  end)
  :rename { name = "full_name" }                               -- rename a column

save.append(clean, var("sink_uri"), { checkpointLocation = vars.checkpoint })
