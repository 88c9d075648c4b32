-- The binlog engine's statements: DDL (stops the pipeline, or is applied to
-- the sink with mergeSchema) and DML logged in STATEMENT format (its rows are
-- not in the binlog: it stops the tables it writes). The parsers find the
-- tables a statement touches; the Runner methods are installed by
-- engine/binlog.lua.
local errors = require("mocdc.errors")
local position = require("mocdc.position")
local schema = require("mocdc.schema")

local M = {}
local Runner = {}
M.methods = Runner

-- Names a DDL statement touches: list of {db, table, verb}.
function M.ddl_targets(sql, default_db)
  local s = sql:gsub("/%*.-%*/", " "):gsub("^%s+", "")
  local up = s:upper()
  local out = {}
  local verb, rest
  for _, v in ipairs({ "ALTER TABLE", "CREATE TABLE", "DROP TABLE", "TRUNCATE TABLE", "TRUNCATE", "RENAME TABLE",
    "CREATE OR REPLACE TABLE", "ALTER ONLINE TABLE", "ALTER IGNORE TABLE" }) do
    if up:sub(1, #v) == v and up:sub(#v + 1, #v + 1):match("%s") then verb, rest = v, s:sub(#v + 2) break end
  end
  if not verb then return out, nil end
  rest = rest:gsub("^%s+", ""):gsub("^[Ii][Ff]%s+[Nn][Oo][Tt]%s+[Ee][Xx][Ii][Ss][Tt][Ss]%s+", "")
    :gsub("^[Ii][Ff]%s+[Ee][Xx][Ii][Ss][Tt][Ss]%s+", "")
  local kind = verb:match("^(%u+)")
  if verb == "CREATE OR REPLACE TABLE" then kind = "CREATE" end
  if kind == "DROP" or kind == "RENAME" then
    -- DROP TABLE a, b / RENAME TABLE a TO b, c TO d
    while true do
      local db, t, after = schema.read_qname(rest, default_db)
      if not t then break end
      local x = { db = db, table = t, verb = kind }
      if kind == "RENAME" then
        local to = after:match("^%s+[Tt][Oo]%s+(.*)$")
        if not to then break end
        x.to_db, x.to_table, after = schema.read_qname(to, default_db)
        if not x.to_table then break end
      end
      out[#out + 1] = x
      rest = after:match("^%s*,(.*)$")
      if not rest then break end
    end
  else
    local db, t, after = schema.read_qname(rest, default_db)
    out[#out + 1] = { db = db, table = t, verb = kind, rest = after or "" }
  end
  return out, kind
end

-- The tables a DML statement logged in STATEMENT format writes: list of
-- {db, table}, or nil for the multi-table UPDATE / DELETE forms (the caller
-- then takes every table the statement mentions).
function M.dml_targets(sql, default_db)
  local s = sql:gsub("/%*.-%*/", " ")
  local verb, rest = s:match("^%s*(%a+)%s+(.*)$")
  if not verb then return nil end
  verb = verb:upper()
  local function skip(words)
    while true do
      local w, after = rest:match("^%s*([%a_]+)%s+(.*)$")
      if not w or not words[w:upper()] then return end
      rest = after
    end
  end
  if verb == "LOAD" then
    rest = rest:match("[Ii][Nn][Tt][Oo]%s+[Tt][Aa][Bb][Ll][Ee]%s+(.*)$")
    if not rest then return nil end
  elseif verb == "INSERT" or verb == "REPLACE" then
    skip({ LOW_PRIORITY = 1, DELAYED = 1, HIGH_PRIORITY = 1, IGNORE = 1, INTO = 1 })
  elseif verb == "UPDATE" then
    skip({ LOW_PRIORITY = 1, IGNORE = 1 })
  elseif verb == "DELETE" then
    skip({ LOW_PRIORITY = 1, QUICK = 1, IGNORE = 1 })
    local from = rest:match("^[Ff][Rr][Oo][Mm]%s+(.*)$")
    if not from then return nil end -- DELETE t1, t2 FROM ...
    rest = from
  else
    return nil
  end
  local db, t, after = schema.read_qname(rest, default_db)
  if not t then return nil end
  if verb == "UPDATE" then
    -- single-table: [[AS] alias] SET
    local a = after:gsub("^%s+[Aa][Ss]%s+", " ")
    local w = a:match("^%s*([%a_]+)")
    if w and w:upper() ~= "SET" then w = a:match("^%s*[%w_$]+%s+([%a_]+)") end
    if not w or w:upper() ~= "SET" then return nil end
  elseif verb == "DELETE" and (after:match("^%s*,") or after:match("^%s+[Uu][Ss][Ii][Nn][Gg]%s")) then
    return nil
  end
  return { { db = db, table = t } }
end

-- A DML statement logged in STATEMENT format: its rows are not in the binlog.
-- It stops the synced tables it writes (those whose watermark it is past);
-- one on a table the pipeline does not sync is passed over.
function Runner:statement(ev, cur, txn_start)
  local targets = M.dml_targets(ev.sql or "", ev.db)
  local hit = {}
  for _, t in ipairs(self.tables) do
    local writes = false
    if targets then
      for _, x in ipairs(targets) do writes = writes or (x.db == t.src_db and x.table == t.src_table) end
    else
      -- multi-table forms: any mention of the table's name (quoted or bare) counts
      local sql = ev.sql or ""
      writes = sql:find(schema.qi(t.src_table), 1, true) ~= nil or
        (" " .. sql .. " "):find("[^%w_$`]" .. t.src_table:gsub("%p", "%%%0") .. "[^%w_$`]") ~= nil
    end
    if writes and not t.failed and position.compare(txn_start, t.pos) >= 0 then hit[#hit + 1] = t end
  end
  if #hit == 0 then return end
  local names = {}
  for i, t in ipairs(hit) do names[i] = t.src_label end
  names = table.concat(names, ", ")
  self:tables_failed(hit, errors.new(string.format("source %s logged a DML statement on %s in STATEMENT format at " ..
    "%s:%s (\"%s\"); its rows cannot be replicated: keep binlog_format=ROW for every session " ..
    "(SET GLOBAL binlog_format=ROW), then re-run with a full copy of %s", self.src.c.label, names, cur.file,
    tostring(ev.pos), (ev.sql or ""):gsub("%s+", " "):sub(1, 120), names)))
end

-- A DDL on synced tables: stops the pipeline, or (mergeSchema) is applied to the sink.
function Runner:handle_ddl(ev, cur)
  local targets = M.ddl_targets(ev.sql or "", ev.db)
  local hit = {}
  for _, x in ipairs(targets) do
    if x.table and x.db and self:selected(x.db, x.table) then hit[#hit + 1] = x end
  end
  if #hit == 0 then return false end
  if self.in_txn then self:flush(self.last_commit) end
  local first = hit[1]
  local where = string.format("%s:%d", cur.file, ev.pos or cur.pos)
  if not self.merge_schema then
    errors.raise(string.format("source DDL on %s.%s at %s (\"%s\"): schema changes stop the pipeline; " ..
      "set mergeSchema = \"true\" in save.append options to apply them to the sink, or re-run with a full copy",
      first.db, first.table, where, (ev.sql or ""):gsub("%s+", " "):sub(1, 200)))
  end
  for _, x in ipairs(hit) do
    if x.verb == "RENAME" then
      errors.raise(string.format("source DDL RENAME TABLE %s.%s at %s: renaming a synced table is not supported; " ..
        "re-run the pipeline with the new name and a full copy", x.db, x.table, where))
    end
  end
  for _, x in ipairs(hit) do
    local t = self.by_name[x.db .. "\0" .. x.table]
    if self.sink:apply_ddl(t, x, ev) then
      -- a generated column added or changed: never written from now on
      local _, gen, set = schema.split_generated(schema.columns(self.src.c, t.src_db, t.src_table))
      t.generated, t.generated_set = gen, set
    end
  end
  return true
end


-- A DDL event: applied (mergeSchema) when it is past the watermark of a table
-- it touches and inside the startTs window; the stream's position moves past it.
function Runner:on_ddl(ev)
  local cur = self.cur
  self.in_src_txn = false
  if ev.pos then cur.pos = ev.pos end
  cur.gtid = self.gtid -- the DDL's own (positions carry the last GTID before them)
  local txn_ok = true
  for _, x in ipairs(M.ddl_targets(ev.sql or "", ev.db)) do
    local tt = x.db and x.table and self.by_name[x.db .. "\0" .. x.table]
    if tt and position.compare(self.txn_start, tt.pos) < 0 then txn_ok = false end
  end
  -- DDL before startTs is history outside the requested window (tasks started with --start-ts)
  if self.start_ts and ev.ts and ev.ts > 0 and ev.ts < self.start_ts then txn_ok = false end
  self.txn_start = position.copy(cur)
  local applied = txn_ok and self:handle_ddl(ev, cur) -- flushes what came before at the old last_commit
  self.last_commit = position.copy(cur)
  if applied then self:advance_idle(self.last_commit, true) end
  return self:caught_up(cur) and not self.in_txn
end

return M
