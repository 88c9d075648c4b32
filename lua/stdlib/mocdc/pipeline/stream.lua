-- A stream is what `load.*` returns: a source description plus an ordered
-- list of transforms. Transforms are the only place rows become Lua tables;
-- a stream without transforms is copied entirely in C.
local M = {}
local Stream = {}
Stream.__index = Stream

function M.new(source)
  return setmetatable({ source = source, transforms = {} }, Stream)
end

function M.is(v) return getmetatable(v) == Stream end

local function with(self, t)
  local s = setmetatable({ source = self.source, transforms = {} }, Stream)
  for i, x in ipairs(self.transforms) do s.transforms[i] = x end
  s.transforms[#s.transforms + 1] = t
  return s
end

local function where(level)
  local info = debug.getinfo(level, "Sl")
  return info and (info.short_src .. ":" .. (info.currentline or 0)) or "?"
end

-- map(fn): fn(row) returns the row to write (the same table modified, or a
-- new one), or nil to drop it. Keys are column names; nil values are NULL.
function Stream:map(fn)
  assert(type(fn) == "function", "map expects a function")
  return with(self, { kind = "map", fn = fn, where = where(3) })
end

-- filter(fn): keep rows for which fn(row) is true.
function Stream:filter(fn)
  assert(type(fn) == "function", "filter expects a function")
  return with(self, { kind = "filter", fn = fn, where = where(3) })
end

-- rename{old = "new", ...}: rename columns (the sink table is created with the new names).
function Stream:rename(map)
  assert(type(map) == "table", "rename expects a table {old = \"new\"}")
  return with(self, { kind = "rename", map = map, where = where(3) })
end

-- drop{"col", ...}: remove columns (the sink table is created without them).
function Stream:drop(cols)
  assert(type(cols) == "table", "drop expects a list of column names")
  local set = {}
  for _, c in ipairs(cols) do set[c] = true end
  return with(self, { kind = "drop", set = set, where = where(3) })
end

-- Column list after rename/drop (map/filter keep columns as they are).
function M.output_columns(transforms, cols)
  local out = {}
  for _, c in ipairs(cols) do out[#out + 1] = c end
  for _, t in ipairs(transforms) do
    if t.kind == "rename" then
      for i, c in ipairs(out) do
        if t.map[c.name] then
          local n = {}
          for k, v in pairs(c) do n[k] = v end
          n.name = t.map[c.name]
          out[i] = n
        end
      end
    elseif t.kind == "drop" then
      local keep = {}
      for _, c in ipairs(out) do if not t.set[c.name] then keep[#keep + 1] = c end end
      out = keep
    end
  end
  return out
end

-- Compile the transform list into one function row -> row|nil.
-- Errors inside user functions are raised with the user's file:line.
function M.compile(transforms)
  if #transforms == 0 then return nil end
  return function(row)
    for _, t in ipairs(transforms) do
      if t.kind == "map" then
        local ok, res = pcall(t.fn, row)
        if not ok then error({ transform = "map", where = t.where, msg = tostring(res) }, 0) end
        if res == nil then return nil end
        if type(res) ~= "table" then
          error({ transform = "map", where = t.where, msg = "map function returned a " .. type(res) .. ", expected a row table or nil" }, 0)
        end
        row = res
      elseif t.kind == "filter" then
        local ok, res = pcall(t.fn, row)
        if not ok then error({ transform = "filter", where = t.where, msg = tostring(res) }, 0) end
        if not res then return nil end
      elseif t.kind == "rename" then
        for old, new in pairs(t.map) do row[new], row[old] = row[old], nil end
      elseif t.kind == "drop" then
        for c in pairs(t.set) do row[c] = nil end
      end
    end
    return row
  end
end

return M
