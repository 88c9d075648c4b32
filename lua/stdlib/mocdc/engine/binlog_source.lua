-- The binlog engine's source side: the settings row-level CDC needs, the
-- source's positions (current, oldest, explicit start options, startTs /
-- endTs) and the check that a saved position is still in its history.
local binlog = require("mocdc.binlog")
local errors = require("mocdc.errors")
local position = require("mocdc.position")

local M = {}

local function row_of(c, sql)
  local rows, err, code, state = c:query(sql)
  if not rows then errors.raise_sql(string.format("source %s: %s failed: %s", c.label, sql, err), code, state) end
  return rows
end

-- Refuse a source whose binlog cannot drive row-level CDC.
function M.check_binlog_settings(c)
  local r = row_of(c, "SELECT @@log_bin, @@binlog_format, @@binlog_row_image")[1]
  local lbl = c.label
  if tostring(r[1]) ~= "1" then
    errors.raise(string.format("source %s has log_bin=OFF; the binlog source needs log_bin=ON and binlog_format=ROW " ..
      "(add log_bin and binlog_format=ROW to my.cnf and restart), or use load.snapshot", lbl), 2)
  end
  if tostring(r[2]):upper() ~= "ROW" then
    errors.raise(string.format("source %s has binlog_format=%s; mocdc needs binlog_format=ROW " ..
      "(SET GLOBAL binlog_format=ROW, or binlog_format=ROW in my.cnf)", lbl, tostring(r[2])), 2)
  end
  if tostring(r[3]):upper() ~= "FULL" then
    errors.raise(string.format("source %s has binlog_row_image=%s; mocdc needs binlog_row_image=FULL " ..
      "(SET GLOBAL binlog_row_image=FULL)", lbl, tostring(r[3])), 2)
  end
end

-- The source's current binlog position (raises a clear error when there is none).
function M.master_status(c)
  local p, err, errno = binlog.master_status(c)
  if not p then errors.raise_sql("source " .. c.label .. ": " .. tostring(err), errno) end
  return p
end

-- The oldest binlog still on the source, from its start.
function M.first_binlog(c)
  local logs, err, errno = binlog.binary_logs(c)
  if not logs or not logs[1] then
    errors.raise_sql("source " .. c.label .. ": SHOW BINARY LOGS failed: " .. tostring(err), errno)
  end
  return { file = logs[1].file, pos = 4 }
end

-- MLSQL start options: bingLogNamePrefix + binlogIndex + binlogFileOffset.
function M.explicit_start(o)
  local gtid = o.startGtid or o.gtid
  if gtid and o.binlogIndex == nil and o.binlogFile == nil then
    if not tostring(gtid):match("^%d+%-%d+%-%d+") then
      errors.raise(string.format("startGtid '%s' is not a MariaDB GTID (domain-server-seq, e.g. 0-1-42)", tostring(gtid)), 2)
    end
    return { gtid = tostring(gtid) }
  end
  if o.binlogIndex == nil and o.binlogFile == nil then return nil end
  local file = o.binlogFile
  if not file then
    local idx = tonumber(o.binlogIndex)
    if not idx then errors.raise(string.format("binlogIndex '%s' is not a number", tostring(o.binlogIndex)), 2) end
    file = string.format("%s.%06d", o.bingLogNamePrefix or "mysql-bin", idx)
  end
  local pos = tonumber(o.binlogFileOffset or 4)
  if not pos then errors.raise(string.format("binlogFileOffset '%s' is not a number", tostring(o.binlogFileOffset)), 2) end
  return { file = file, pos = pos }
end

-- Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end

-- "YYYY-MM-DD HH:MM:SS" (UTC) -> unix seconds, whatever the local time zone
-- (no os.time: it reads local time, and a zone's offset in 1970 need not be today's)
function M.parse_ts(name, s)
  if s == nil or s == "" then return nil end
  if type(s) == "number" then return s end
  local y, mo, d, h, mi, se = tostring(s):match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[ T](%d%d):(%d%d):(%d%d)")
  y, mo, d, h, mi, se = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(se)
  if not y or mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or se > 59 then
    errors.raise(string.format("%s '%s' is not a timestamp (expected YYYY-MM-DD HH:MM:SS, UTC)", name, tostring(s)), 2)
  end
  return days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + se
end

-- What to do when the binlog a checkpoint needs is gone (purged, or the
-- history changed under it).
M.FULL_COPY_HINT = "re-run with a full copy (drop the sink watermark: mocdc task restart, or delete " ..
  "checkpointLocation and the mocdc.watermark rows)"

-- A saved position must still be in the history it was taken from (see
-- binlog.check_history); a changed history is the log gone.
function M.check_history(c, p)
  local ok, what = binlog.check_history(c, p)
  if ok then return end
  if ok == nil then
    errors.raise(string.format("source %s: cannot check that the saved position %s is still in its binlog history: %s",
      c.label, position.format(p), tostring(what)))
  end
  errors.raise(string.format("source %s: its binlog history changed since the checkpoint (RESET MASTER, a restore, " ..
    "or another server at that address): the saved position %s %s; the changes since then cannot be read from it: %s",
    c.label, position.format(p), what, M.FULL_COPY_HINT))
end

return M
