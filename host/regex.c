/* mocdc.regex.lib: PCRE2 (8-bit, UTF) patterns for table filters and transforms.
 *
 * Compiled patterns live in a process-wide cache keyed by pattern text (mocdc
 * has one lua_State, so one cache). A Lua `re` handle holds a reference to a
 * cache entry; `__gc`/`re:free()` drops it. Entries nobody references are
 * kept for reuse until the cache grows past CACHE_MAX, then they are swept.
 * The cache is static C memory, never a Lua object, so the order in which
 * lua_close() runs finalizers cannot free an entry under a live handle.
 *
 * Errors: a bad pattern is an expected failure -> nil, "invalid regex '<p>':
 * <pcre2 message> at offset N". A non-string argument raises. */
#include <stdlib.h>
#include <string.h>
#include <pcre2.h>
#include "mocdc.h"

#define RE_MT "mocdc.regex"
#define CACHE_BUCKETS 256
#define CACHE_MAX 512

typedef struct re_entry {
  struct re_entry *next; /* hash chain */
  char *pattern;
  size_t len;
  unsigned hash;
  int refs;              /* live Lua handles */
  pcre2_code *code;      /* unanchored: find/match */
  pcre2_code *anchored;  /* PCRE2_ANCHORED|PCRE2_ENDANCHORED at compile time (JIT-able); lazy */
  pcre2_match_data *md;  /* shared: one lua_State, no reentrancy */
} re_entry;

typedef struct {
  re_entry *e; /* NULL once freed */
} re_handle;

static re_entry *cache[CACHE_BUCKETS];
static int cache_count;

static unsigned hash_bytes(const char *s, size_t n) {
  unsigned h = 2166136261u; /* FNV-1a */
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
  return h;
}

static void entry_free(re_entry *e) {
  if (!e) return;
  pcre2_match_data_free(e->md);
  pcre2_code_free(e->code);
  pcre2_code_free(e->anchored);
  free(e->pattern);
  free(e);
}

/* Drop every entry no handle references. */
static void cache_sweep(void) {
  for (int b = 0; b < CACHE_BUCKETS; b++) {
    re_entry **pp = &cache[b];
    while (*pp) {
      re_entry *e = *pp;
      if (e->refs == 0) {
        *pp = e->next;
        entry_free(e);
        cache_count--;
      } else {
        pp = &e->next;
      }
    }
  }
}

static pcre2_code *compile_code(const char *p, size_t n, uint32_t extra, int *err,
                                PCRE2_SIZE *off) {
  uint32_t opts = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | extra;
  pcre2_code *code = pcre2_compile((PCRE2_SPTR)p, n, opts, err, off, NULL);
  if (code) pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); /* best effort */
  return code;
}

/* compile(pattern) -> re | nil, msg */
static int l_compile(lua_State *L) {
  size_t n;
  const char *p = luaL_checklstring(L, 1, &n);
  unsigned h = hash_bytes(p, n);
  re_entry *e = cache[h % CACHE_BUCKETS];
  while (e && !(e->hash == h && e->len == n && memcmp(e->pattern, p, n) == 0)) e = e->next;

  if (!e) {
    int err;
    PCRE2_SIZE off;
    pcre2_code *code = compile_code(p, n, 0, &err, &off);
    if (!code) {
      PCRE2_UCHAR msg[256];
      if (pcre2_get_error_message(err, msg, sizeof msg) < 0) strcpy((char *)msg, "unknown error");
      lua_pushnil(L);
      lua_pushliteral(L, "invalid regex '");
      lua_pushlstring(L, p, n);
      lua_pushfstring(L, "': %s at offset %d", (const char *)msg, (int)off);
      lua_concat(L, 3);
      return 2;
    }
    e = calloc(1, sizeof *e);
    char *copy = malloc(n + 1);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, NULL);
    if (!e || !copy || !md) {
      free(e);
      free(copy);
      pcre2_match_data_free(md);
      pcre2_code_free(code);
      return luaL_error(L, "out of memory compiling regex");
    }
    memcpy(copy, p, n);
    copy[n] = 0;
    e->pattern = copy;
    e->len = n;
    e->hash = h;
    e->code = code;
    e->md = md;
    if (cache_count >= CACHE_MAX) cache_sweep();
    e->next = cache[h % CACHE_BUCKETS];
    cache[h % CACHE_BUCKETS] = e;
    cache_count++;
  }

  re_handle *r = (re_handle *)lua_newuserdata(L, sizeof *r);
  r->e = NULL;
  luaL_getmetatable(L, RE_MT);
  lua_setmetatable(L, -2);
  r->e = e;
  e->refs++;
  return 1;
}

static re_entry *check_re(lua_State *L) {
  re_handle *r = (re_handle *)luaL_checkudata(L, 1, RE_MT);
  if (!r->e) luaL_argerror(L, 1, "regex already freed");
  return r->e;
}

/* Optional 1-based init (negative counts from the end, like string.find). */
static size_t check_init(lua_State *L, int idx, size_t len) {
  lua_Integer init = luaL_optinteger(L, idx, 1);
  if (init < 0) init = (lua_Integer)len + init + 1;
  if (init < 1) init = 1;
  return (size_t)(init - 1);
}

/* Runs the match; returns rc > 0 on match, 0 on no match, pushes nil,msg and
 * returns -1 on a matching error (match limit, ...). */
static int run(lua_State *L, pcre2_code *code, re_entry *e, const char *s, size_t n,
               size_t start) {
  if (start > n) return 0;
  int rc = pcre2_match(code, (PCRE2_SPTR)s, n, start, 0, e->md, NULL);
  if (rc == PCRE2_ERROR_NOMATCH) return 0;
  if (rc < 0) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(rc, msg, sizeof msg);
    lua_pushnil(L);
    lua_pushfstring(L, "regex '%s': %s", e->pattern, (const char *)msg);
    return -1;
  }
  return rc == 0 ? 1 : rc; /* 0 = ovector too small: cannot happen with from_pattern */
}

/* re:full_match(s) -> boolean: the whole subject matches. */
static int l_full_match(lua_State *L) {
  re_entry *e = check_re(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  if (!e->anchored) {
    int err;
    PCRE2_SIZE off;
    e->anchored = compile_code(e->pattern, e->len, PCRE2_ANCHORED | PCRE2_ENDANCHORED, &err, &off);
    if (!e->anchored) return luaL_error(L, "regex '%s': cannot compile anchored form", e->pattern);
  }
  int rc = run(L, e->anchored, e, s, n, 0);
  if (rc < 0) return 2;
  lua_pushboolean(L, rc > 0);
  return 1;
}

/* re:find(s[, init]) -> start, end (1-based, inclusive, as string.find) | nil */
static int l_find(lua_State *L) {
  re_entry *e = check_re(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  int rc = run(L, e->code, e, s, n, check_init(L, 3, n));
  if (rc < 0) return 2;
  if (rc == 0) {
    lua_pushnil(L);
    return 1;
  }
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
  lua_pushinteger(L, (lua_Integer)ov[0] + 1);
  lua_pushinteger(L, (lua_Integer)ov[1]);
  return 2;
}

/* re:match(s[, init]) -> whole, cap1, cap2, ... | nil. Unset groups are false. */
static int l_match(lua_State *L) {
  re_entry *e = check_re(L);
  size_t n;
  const char *s = luaL_checklstring(L, 2, &n);
  int rc = run(L, e->code, e, s, n, check_init(L, 3, n));
  if (rc < 0) return 2;
  if (rc == 0) {
    lua_pushnil(L);
    return 1;
  }
  uint32_t groups = pcre2_get_ovector_count(e->md);
  uint32_t ncap = 0;
  pcre2_pattern_info(e->code, PCRE2_INFO_CAPTURECOUNT, &ncap);
  if (ncap + 1 < groups) groups = ncap + 1;
  luaL_checkstack(L, (int)groups, "too many captures");
  PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
  for (uint32_t i = 0; i < groups; i++) {
    if ((int)i >= rc || ov[2 * i] == PCRE2_UNSET) lua_pushboolean(L, 0);
    else lua_pushlstring(L, s + ov[2 * i], ov[2 * i + 1] - ov[2 * i]);
  }
  return (int)groups;
}

static int l_pattern(lua_State *L) {
  re_entry *e = check_re(L);
  lua_pushlstring(L, e->pattern, e->len);
  return 1;
}

/* __gc and re:free(): drop this handle's reference; idempotent. */
static int l_free(lua_State *L) {
  re_handle *r = (re_handle *)luaL_checkudata(L, 1, RE_MT);
  if (r->e) {
    r->e->refs--;
    r->e = NULL;
  }
  return 0;
}

static int l_tostring(lua_State *L) {
  re_handle *r = (re_handle *)luaL_checkudata(L, 1, RE_MT);
  if (r->e) lua_pushfstring(L, "mocdc.regex: '%s'", r->e->pattern);
  else lua_pushliteral(L, "mocdc.regex: (freed)");
  return 1;
}

/* cache_stats() -> entries, referenced (for specs) */
static int l_cache_stats(lua_State *L) {
  int refd = 0;
  for (int b = 0; b < CACHE_BUCKETS; b++)
    for (re_entry *e = cache[b]; e; e = e->next) refd += e->refs > 0;
  lua_pushinteger(L, cache_count);
  lua_pushinteger(L, refd);
  return 2;
}

/* cache_clear(): drop unreferenced entries. */
static int l_cache_clear(lua_State *L) {
  cache_sweep();
  return 0;
}

/* version(): PCRE2 library version (for `mocdc version`). */
static int l_version(lua_State *L) {
  char buf[64];
  if (pcre2_config(PCRE2_CONFIG_VERSION, buf) < 0) buf[0] = 0;
  lua_pushstring(L, buf);
  return 1;
}

int luaopen_mocdc_regex_lib(lua_State *L) {
  static const luaL_Reg methods[] = {{"full_match", l_full_match}, {"find", l_find},
                                     {"match", l_match},           {"pattern", l_pattern},
                                     {"free", l_free},             {NULL, NULL}};
  static const luaL_Reg fns[] = {{"compile", l_compile}, {"version", l_version},
                                 {"cache_stats", l_cache_stats},
                                 {"cache_clear", l_cache_clear},
                                 {NULL, NULL}};
  mocdc_class(L, RE_MT, methods, l_free, l_tostring);
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  return 1;
}
