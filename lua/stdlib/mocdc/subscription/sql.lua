-- The `mocdc sql` command: the subscription statements (seed 003) parsed and
-- run against the downstream.
--
--   CREATE SUBSCRIPTION name DATABASE db [TABLE t] FROM 'mysql://acc#user:pw@host:port' [SYNC_INTERVAL = n]
--   SHOW SUBSCRIPTIONS
--   DROP SUBSCRIPTION [IF EXISTS] name
--
-- The parser is a hand-written scanner (tokenize) and a recursive-descent
-- reader (parse); every error is one line naming the position (exit 2). The
-- rows the statements read and write are mocdc.subscription.store's.
local cjson = require("cjson")
local errors = require("mocdc.errors")
local log = require("mocdc.log")
local schema = require("mocdc.schema")
local store = require("mocdc.subscription.store")
local uri = require("mocdc.uri")

local M = {}

---------------------------------------------------------------------------
-- parsing
---------------------------------------------------------------------------

M.USAGE = [[
  CREATE SUBSCRIPTION name DATABASE db [TABLE t] FROM 'mysql://acc#user:pw@host:port' [SYNC_INTERVAL = seconds]
  SHOW SUBSCRIPTIONS
  DROP SUBSCRIPTION [IF EXISTS] name]]
-- what an unknown statement is told (errors are one line; --help has the syntax)
M.STATEMENTS = "CREATE SUBSCRIPTION, SHOW SUBSCRIPTIONS or DROP SUBSCRIPTION (mocdc sql --help shows their syntax)"

-- Tokens: {k = "word"|"ident"|"string"|"number"|"op"|"eof", v = text, pos = 1-based offset}
function M.tokenize(s)
  local toks, i, n = {}, 1, #s
  local function bad(msg, pos) errors.raise(string.format("syntax error at position %d: %s", pos, msg), 2) end
  while i <= n do
    local c = s:sub(i, i)
    if c:match("%s") then
      i = i + 1
    elseif c == "-" and s:sub(i, i + 1) == "--" then
      local e = s:find("\n", i, true)
      i = e and e + 1 or n + 1
    elseif c == "'" or c == '"' then
      local j, buf = i + 1, {}
      while true do
        if j > n then bad("unterminated string starting here", i) end
        local ch = s:sub(j, j)
        if ch == "\\" and j < n then
          buf[#buf + 1] = s:sub(j + 1, j + 1)
          j = j + 2
        elseif ch == c then
          if s:sub(j + 1, j + 1) == c then buf[#buf + 1] = c j = j + 2
          else break end
        else
          buf[#buf + 1] = ch
          j = j + 1
        end
      end
      toks[#toks + 1] = { k = "string", v = table.concat(buf), pos = i }
      i = j + 1
    elseif c == "`" then
      local j, buf = i + 1, {}
      while true do
        if j > n then bad("unterminated `identifier` starting here", i) end
        local ch = s:sub(j, j)
        if ch == "`" then
          if s:sub(j + 1, j + 1) == "`" then buf[#buf + 1] = "`" j = j + 2 else break end
        else buf[#buf + 1] = ch j = j + 1 end
      end
      if #buf == 0 then bad("empty `identifier`", i) end
      toks[#toks + 1] = { k = "ident", v = table.concat(buf), pos = i }
      i = j + 1
    elseif c:match("%d") then
      local num = s:match("^%d+", i)
      local after = s:sub(i + #num, i + #num)
      if after:match("[%a_$]") then
        local w = s:match("^[%w_$]+", i)
        toks[#toks + 1] = { k = "word", v = w, pos = i }
        i = i + #w
      else
        toks[#toks + 1] = { k = "number", v = num, pos = i }
        i = i + #num
      end
    elseif c:match("[%a_$]") then
      local w = s:match("^[%w_$]+", i)
      toks[#toks + 1] = { k = "word", v = w, pos = i }
      i = i + #w
    else
      toks[#toks + 1] = { k = "op", v = c, pos = i }
      i = i + 1
    end
  end
  toks[#toks + 1] = { k = "eof", v = "", pos = n + 1 }
  return toks
end

local function show_tok(t)
  if t.k == "eof" then return "end of statement" end
  if t.k == "string" then return "'" .. t.v .. "'" end
  return "'" .. t.v .. "'"
end

-- parse(sql) -> {kind = "create"|"show"|"drop", ...}; raises one clear line (code 2).
function M.parse(s)
  if type(s) ~= "string" or s:match("^%s*$") then
    errors.raise("no statement given: expected " .. M.STATEMENTS, 2)
  end
  local toks = M.tokenize(s)
  local p = 1
  local function peek() return toks[p] end
  local function fail(expected)
    local t = peek()
    errors.raise(string.format("syntax error at position %d near %s: expected %s", t.pos, show_tok(t), expected), 2)
  end
  local function kw(word)
    local t = peek()
    if t.k == "word" and t.v:upper() == word then p = p + 1 return true end
    return false
  end
  local function need(word, expected) if not kw(word) then fail(expected or word) end end
  local function name(what)
    local t = peek()
    if t.k == "ident" or (t.k == "word" and not t.v:match("^%d")) then p = p + 1 return t.v end
    fail(what)
  end
  local function finish()
    if peek().k == "op" and peek().v == ";" then p = p + 1 end
    if peek().k ~= "eof" then fail("end of statement") end
  end
  local ast
  if kw("CREATE") then
    need("SUBSCRIPTION", "SUBSCRIPTION after CREATE")
    ast = { kind = "create", name = name("a subscription name") }
    need("DATABASE", "DATABASE <db>")
    ast.database = name("a database name after DATABASE")
    if kw("TABLE") then
      ast.table = name("a table name after TABLE")
      if peek().k == "op" and peek().v == "." then
        errors.raise(string.format("syntax error at position %d: TABLE takes a table name of the DATABASE given, " ..
          "not db.table", peek().pos), 2)
      end
    end
    need("FROM", "FROM 'mysql://acc#user:pw@host:port'")
    local t = peek()
    if t.k ~= "string" then fail("the upstream connection string in quotes after FROM") end
    p = p + 1
    ast.upstream = t.v
    local u, err = uri.parse(t.v)
    if not u then errors.raise(string.format("FROM '%s': %s", log.mask(t.v), err), 2) end
    ast.interval = store.DEFAULT_INTERVAL
    if kw("SYNC_INTERVAL") then
      if peek().k == "op" and peek().v == "=" then p = p + 1 end
      local n = peek()
      if n.k ~= "number" then fail("a number of seconds after SYNC_INTERVAL =") end
      p = p + 1
      ast.interval = tonumber(n.v)
      if ast.interval < 1 then
        errors.raise(string.format("SYNC_INTERVAL = %s: the interval must be at least 1 second", n.v), 2)
      end
    end
    finish()
    ast.level = ast.table and "table" or "database"
  elseif kw("SHOW") then
    need("SUBSCRIPTIONS", "SUBSCRIPTIONS after SHOW")
    finish()
    ast = { kind = "show" }
  elseif kw("DROP") then
    need("SUBSCRIPTION", "SUBSCRIPTION after DROP")
    ast = { kind = "drop" }
    if kw("IF") then need("EXISTS", "EXISTS after IF") ast.if_exists = true end
    ast.name = name("a subscription name")
    finish()
  else
    errors.raise(string.format("syntax error at position %d near %s: expected %s", peek().pos, show_tok(peek()),
      M.STATEMENTS), 2)
  end
  return ast
end

---------------------------------------------------------------------------
-- CREATE / SHOW / DROP
---------------------------------------------------------------------------

function M.create(c, ast)
  local up = store.open_upstream(ast.upstream)
  local ok, e = pcall(function()
    if not schema.database_exists(up, ast.database) then
      errors.raise(string.format("upstream %s has no database '%s'", up.label, ast.database), 2)
    end
    if ast.table and not schema.table_exists(up, ast.database, ast.table) then
      errors.raise(string.format("upstream %s has no table %s.%s", up.label, ast.database, ast.table), 2)
    end
  end)
  up:close()
  if not ok then error(e, 0) end
  store.ensure_schema(c)
  if store.find(c, ast.name) then
    errors.raise(string.format("subscription '%s' already exists (DROP SUBSCRIPTION %s first)", ast.name, ast.name), 2)
  end
  store.add(c, ast)
  return string.format("subscription '%s' created: %s %s%s from %s every %d s (run mocdc serve --state-uri on " ..
    "this downstream to sync)", ast.name, ast.level, ast.database, ast.table and ("." .. ast.table) or "",
    log.mask(ast.upstream), ast.interval)
end

function M.drop(c, ast)
  store.ensure_schema(c)
  local id = store.find(c, ast.name)
  if not id then
    if ast.if_exists then return string.format("subscription '%s' does not exist", ast.name) end
    errors.raise(string.format("subscription '%s' does not exist (SHOW SUBSCRIPTIONS lists them)", ast.name), 2)
  end
  store.remove(c, id)
  return string.format("subscription '%s' dropped (the downstream tables are kept)", ast.name)
end

M.SHOW_COLUMNS = { "subscription_name", "upstream_conn", "database", "tables", "sync_interval", "status",
  "create_time", "update_time" }

-- status: 0 = normal, 2 = error (a table's last iteration failed)
function M.show(c)
  store.ensure_schema(c)
  local out = {}
  for _, x in ipairs(store.list(c)) do
    local cfg = type(x[5]) == "string" and select(2, pcall(cjson.decode, x[5])) or {}
    local interval = type(cfg) == "table" and cfg.sync_interval or store.DEFAULT_INTERVAL
    out[#out + 1] = { x[1], uri.mask(x[2]), x[3], x[4], tostring(interval), tonumber(x[6]) > 0 and "2" or "0",
      x[7], x[8] }
  end
  return out
end

-- A result table as the mysql client prints it.
function M.format_table(cols, data)
  local w = {}
  for i, c in ipairs(cols) do w[i] = #c end
  for _, r in ipairs(data) do
    for i = 1, #cols do w[i] = math.max(w[i], #tostring(r[i] == nil and "NULL" or r[i])) end
  end
  local function line()
    local p = {}
    for i = 1, #cols do p[i] = string.rep("-", w[i] + 2) end
    return "+" .. table.concat(p, "+") .. "+"
  end
  local function row(r)
    local p = {}
    for i = 1, #cols do
      local v = tostring(r[i] == nil and "NULL" or r[i])
      p[i] = " " .. v .. string.rep(" ", w[i] - #v) .. " "
    end
    return "|" .. table.concat(p, "|") .. "|"
  end
  local out = { line(), row(cols), line() }
  for _, r in ipairs(data) do out[#out + 1] = row(r) end
  out[#out + 1] = line()
  out[#out + 1] = string.format("%d row%s in set", #data, #data == 1 and "" or "s")
  return table.concat(out, "\n")
end

local function run(c, ast, batch_mode)
  if ast.kind == "create" then
    io.stderr:write(M.create(c, ast), "\n")
  elseif ast.kind == "drop" then
    io.stderr:write(M.drop(c, ast), "\n")
  else
    local data = M.show(c)
    if batch_mode then
      print(table.concat(M.SHOW_COLUMNS, "\t"))
      for _, r in ipairs(data) do print(table.concat(r, "\t")) end
    else
      print(M.format_table(M.SHOW_COLUMNS, data))
    end
  end
end

-- mocdc sql --sink-uri URI [--batch] "STATEMENT"
function M.main(args)
  local sink_uri, stmt, batch_mode
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--sink-uri" then sink_uri = args[i + 1] i = i + 1
    elseif a:match("^%-%-sink%-uri=") then sink_uri = a:sub(12)
    elseif a == "--batch" or a == "-B" then batch_mode = true
    elseif a == "-h" or a == "--help" then
      io.write("Usage: mocdc sql --sink-uri mysql://user:pw@host:port \"STATEMENT\"\nStatements:\n" .. M.USAGE .. "\n")
      return 0
    elseif a:sub(1, 2) == "--" then errors.raise("unknown option " .. a .. " (mocdc sql --help)", 2)
    elseif stmt then errors.raise("give one statement (in quotes)", 2)
    else stmt = a end
    i = i + 1
  end
  if not sink_uri then errors.raise("mocdc sql needs --sink-uri URI: the downstream server (mysql://user@host:port)", 2) end
  local ast = M.parse(stmt)
  local c = store.open_downstream(sink_uri)
  local ok, res = pcall(run, c, ast, batch_mode)
  c:close()
  if not ok then error(res, 0) end
  return 0
end

return M
