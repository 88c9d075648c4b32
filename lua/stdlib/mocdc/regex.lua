-- mocdc.regex: PCRE2 (UTF-8) regular expressions over mocdc.regex.lib.
--
--   local regex = require "mocdc.regex"
--   local re, err = regex.compile("orders_[0-9]+")   -- re | nil, "invalid regex '...': ... at offset N"
--   re:full_match("orders_12")   --> true   (the whole string must match)
--   re:find("x orders_1 y")      --> 3, 10  (1-based, inclusive; nil when absent)
--   re:match("k=v", 1)           --> whole match, captures... (unset group = false) | nil
--   regex.full_match("a.*", "abc"), regex.find(p, s): compile (cached) + match;
--   these raise on an invalid pattern (the pattern is the caller's code).
--
-- Compiled patterns are cached by pattern text in C: compiling the same
-- pattern again is a hash lookup.
local lib = require("mocdc.regex.lib")

local M = {}

M.compile = lib.compile

local function must(pattern)
  local re, err = lib.compile(pattern)
  if not re then error(err, 3) end
  return re
end

function M.full_match(pattern, s)
  return must(pattern):full_match(s)
end

function M.find(pattern, s, init)
  return must(pattern):find(s, init)
end

function M.match(pattern, s, init)
  return must(pattern):match(s, init)
end

-- Quote every regex metacharacter so `s` matches literally.
function M.escape(s)
  return (s:gsub("[%^%$%.%[%]%|%(%)%?%*%+%{%}\\]", "\\%0"))
end

M.cache_stats = lib.cache_stats
M.cache_clear = lib.cache_clear

return M
