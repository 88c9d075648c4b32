-- mocdc.pipeline.table: the table record every stage writes to, with its declared fields.
local record = require("mocdc.pipeline.table")

describe("mocdc.pipeline.table", function()
  local saved
  before_each(function() saved = record.strict; record.strict = true end)
  after_each(function() record.strict = saved end)

  it("builds a record from the selection's fields", function()
    local t = record.new({ src_db = "d", src_table = "t", dst_db = "d2", dst_table = "t2" })
    assert.are.equal("d", t.src_db)
    assert.are.equal("t2", t.dst_table)
    assert.is_true(record.is_record(t))
    assert.is_false(record.is_record({}))
  end)

  it("takes every declared field, from any stage", function()
    local t = record.new({ src_db = "d", src_table = "t", dst_db = "d", dst_table = "t" })
    for name in pairs(record.FIELDS) do t[name] = true end
    for name in pairs(record.FIELDS) do assert.is_true(t[name]) end
  end)

  it("refuses an undeclared field in strict mode, naming it and the writer", function()
    local t = record.new({ src_db = "d", src_table = "t", dst_db = "d", dst_table = "t" })
    local ok, err = pcall(function() t.colums = {} end)
    assert.is_false(ok)
    assert.matches("table record: field 'colums' is not declared in mocdc.pipeline.table %(written at .*table_record_spec.lua:%d+%)", err)
    assert.has_error(function() record.new({ src_db = "d", bogus = 1 }) end)
  end)

  it("lets undeclared fields through when not strict (production never fails on it)", function()
    record.strict = false
    local t = record.new({ src_db = "d" })
    t.extra = 1
    assert.are.equal(1, t.extra)
  end)

  it("documents every field with its stage", function()
    for name, doc in pairs(record.FIELDS) do
      assert.matches("^%a+: .+", doc, name)
    end
  end)
end)
