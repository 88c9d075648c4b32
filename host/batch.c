/* mocdc.batch.lib: the native row container (see batch.h).
 *
 * Memory: three arrays (rows, values, value bytes) grow geometrically and are
 * kept by mocdc_batch_clear(), so a batch that is refilled round after round
 * stops allocating once it reached its working size. Adding a row never
 * mallocs per value. Offsets are 32-bit: one batch holds < 4 GiB of bytes and
 * < 4G values, far above any sane batch size (flush thresholds are MiBs). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "batch.h"
#include "mocdc.h"

#define BATCH_MT "mocdc.batch"

/* Approximate per-item overheads counted by mocdc_batch_bytes(). */
#define ROW_OVERHEAD sizeof(mocdc_row)
#define VAL_OVERHEAD sizeof(mocdc_val)

static const char *const class_names[] = {"num", "str", "bin", "bit", NULL};
static const char *const op_names[] = {"insert", "update", "delete", NULL};

/* ---- growable byte buffer ------------------------------------------------ */

int mocdc_buf_reserve(mocdc_buf *s, size_t extra) {
  if (s->cap - s->len >= extra) return 0;
  size_t need = s->len + extra;
  if (need < s->len) return -1; /* overflow */
  size_t cap = s->cap ? s->cap : 256;
  while (cap < need) {
    if (cap > SIZE_MAX / 2) { cap = need; break; }
    cap *= 2;
  }
  char *p = realloc(s->p, cap);
  if (!p) return -1;
  s->p = p;
  s->cap = cap;
  return 0;
}

int mocdc_buf_add(mocdc_buf *s, const void *p, size_t n) {
  if (mocdc_buf_reserve(s, n) != 0) return -1;
  if (n) memcpy(s->p + s->len, p, n);
  s->len += n;
  return 0;
}

void mocdc_buf_free(mocdc_buf *s) {
  if (!s) return;
  free(s->p);
  s->p = NULL;
  s->len = s->cap = 0;
}

/* ---- batch --------------------------------------------------------------- */

mocdc_batch *mocdc_batch_new(int ncols) {
  if (ncols < 0) return NULL;
  mocdc_batch *b = calloc(1, sizeof *b);
  if (!b) return NULL;
  b->ncols = ncols;
  b->names = calloc(ncols ? (size_t)ncols : 1, sizeof *b->names);
  b->cls = calloc(ncols ? (size_t)ncols : 1, 1);
  if (!b->names || !b->cls) {
    mocdc_batch_free(b);
    return NULL;
  }
  return b;
}

int mocdc_batch_set_column(mocdc_batch *b, int i, const char *name, int cls) {
  if (i < 0 || i >= b->ncols || cls < MOCDC_NUM || cls > MOCDC_BIT) return -1;
  char *n = strdup(name ? name : "");
  if (!n) return -1;
  free(b->names[i]);
  b->names[i] = n;
  b->cls[i] = (uint8_t)cls;
  return 0;
}

void mocdc_batch_clear(mocdc_batch *b) {
  if (!b) return;
  b->nrows = b->nvals = b->dlen = 0;
}

void mocdc_batch_free(mocdc_batch *b) {
  if (!b) return;
  if (b->names)
    for (int i = 0; i < b->ncols; i++) free(b->names[i]);
  free(b->names);
  free(b->cls);
  free(b->rows);
  free(b->vals);
  free(b->data);
  free(b);
}

size_t mocdc_batch_bytes(const mocdc_batch *b) {
  return b->dlen + b->nvals * VAL_OVERHEAD + b->nrows * ROW_OVERHEAD;
}

/* Grow an array of `size`-byte items to hold `need` items (doubling). */
static int grow_array(void **p, size_t *cap, size_t need, size_t size, size_t first) {
  if (need <= *cap) return 0;
  size_t c = *cap ? *cap : first;
  while (c < need) c *= 2;
  if (c > SIZE_MAX / size) return -1;
  void *n = realloc(*p, c * size);
  if (!n) return -1;
  *p = n;
  *cap = c;
  return 0;
}

/* Value bytes of an image: columns map[i] (identity when map is NULL) of v/len;
 * SIZE_MAX when a value is too long for a 32-bit length. */
static size_t image_bytes(int ncols, const char *const *v, const unsigned long *len, const int *map) {
  size_t n = 0;
  if (!v) return 0;
  for (int i = 0; i < ncols; i++) {
    int c = map ? map[i] : i;
    if (!v[c]) continue;
    if (len[c] >= MOCDC_NULL_LEN) return SIZE_MAX;
    n += len[c];
  }
  return n;
}

static uint32_t copy_image(mocdc_batch *b, const char *const *v, const unsigned long *len, const int *map) {
  if (!v) return MOCDC_NO_IMAGE;
  uint32_t image = (uint32_t)b->nvals;
  mocdc_val *out = b->vals + b->nvals;
  for (int i = 0; i < b->ncols; i++) {
    int c = map ? map[i] : i;
    if (!v[c]) {
      out[i].off = 0;
      out[i].len = MOCDC_NULL_LEN;
      continue;
    }
    out[i].off = (uint32_t)b->dlen;
    out[i].len = (uint32_t)len[c];
    if (len[c]) memcpy(b->data + b->dlen, v[c], len[c]);
    b->dlen += len[c];
  }
  b->nvals += (size_t)b->ncols;
  return image;
}

/* Room for one more row of `nimg` images holding `bytes` value bytes. A grown
 * arena is a new one: *old gets the previous arena, which the caller frees
 * only after copying (the values may point into this very batch: a transform
 * copying one of its rows). */
static int reserve_row(mocdc_batch *b, size_t nimg, size_t bytes, char **old) {
  *old = NULL;
  if (bytes == SIZE_MAX) return -1;
  size_t need_vals = b->nvals + nimg * (size_t)b->ncols;
  size_t need_data = b->dlen + bytes;
  /* 32-bit offsets (MOCDC_NO_IMAGE / MOCDC_NULL_LEN reserved) */
  if (need_vals >= UINT32_MAX || need_data >= UINT32_MAX) return -1;
  if (grow_array((void **)&b->rows, &b->cap_rows, b->nrows + 1, sizeof *b->rows, 64) != 0) return -1;
  if (grow_array((void **)&b->vals, &b->cap_vals, need_vals, sizeof *b->vals, 256) != 0) return -1;
  if (need_data > b->dcap) {
    size_t c = b->dcap ? b->dcap : 4096;
    while (c < need_data) c *= 2;
    char *n = malloc(c);
    if (!n) return -1;
    if (b->dlen) memcpy(n, b->data, b->dlen);
    *old = b->data;
    b->data = n;
    b->dcap = c;
  }
  return 0;
}

int mocdc_batch_add(mocdc_batch *b, int op, int64_t ts,
                    const char *const *before, const unsigned long *before_len,
                    const char *const *after, const unsigned long *after_len) {
  if (op < MOCDC_INSERT || op > MOCDC_DELETE) return -1;
  size_t nb = image_bytes(b->ncols, before, before_len, NULL), na = image_bytes(b->ncols, after, after_len, NULL);
  char *old;
  if (nb == SIZE_MAX || na == SIZE_MAX || reserve_row(b, (before ? 1 : 0) + (after ? 1 : 0), nb + na, &old) != 0)
    return -1;
  mocdc_row *r = &b->rows[b->nrows++];
  r->op = (uint8_t)op;
  r->ts = ts;
  r->before = copy_image(b, before, before_len, NULL);
  r->after = copy_image(b, after, after_len, NULL);
  free(old);
  return 0;
}

int mocdc_batch_add_projected(mocdc_batch *b, int op, int64_t ts, const char *const *v,
                              const unsigned long *len, const int *map) {
  if (op < MOCDC_INSERT || op > MOCDC_DELETE) return -1;
  char *old;
  if (reserve_row(b, 1, image_bytes(b->ncols, v, len, map), &old) != 0) return -1;
  mocdc_row *r = &b->rows[b->nrows++];
  r->op = (uint8_t)op;
  r->ts = ts;
  uint32_t image = copy_image(b, v, len, map);
  r->before = op == MOCDC_INSERT ? MOCDC_NO_IMAGE : image;
  r->after = op == MOCDC_DELETE ? MOCDC_NO_IMAGE : image;
  free(old);
  return 0;
}

/* ---- Lua ----------------------------------------------------------------- */

typedef struct { mocdc_batch *b; } batch_ud;


static int l_gc(lua_State *L) {
  batch_ud *u = luaL_checkudata(L, 1, BATCH_MT);
  mocdc_batch_free(u->b);
  u->b = NULL;
  return 0;
}

static int class_of(lua_State *L, const char *s) {
  for (int i = 0; class_names[i]; i++)
    if (strcmp(s, class_names[i]) == 0) return i;
  return -1;
}

/* new(columns): columns = array of {name=, class=} (class defaults to "str"). */
static int l_new(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  int n = (int)lua_objlen(L, 1);
  /* validate first so nothing leaks when raising */
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    if (!lua_istable(L, -1)) luaL_argerror(L, 1, lua_pushfstring(L, "column %d is not a table", i));
    lua_getfield(L, -1, "name");
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_argerror(L, 1, lua_pushfstring(L, "column %d has no name", i));
    lua_getfield(L, -2, "class");
    if (!lua_isnil(L, -1) && (lua_type(L, -1) != LUA_TSTRING || class_of(L, lua_tostring(L, -1)) < 0))
      luaL_argerror(L, 1, lua_pushfstring(L, "column %d: class must be num, str, bin or bit", i));
    lua_pop(L, 3);
  }
  mocdc_batch *b = mocdc_batch_new(n);
  if (!b) return luaL_error(L, "out of memory");
  mocdc_batch_push(L, b); /* owned by Lua from here on: no leak if we raise */
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 1, i);
    lua_getfield(L, -1, "name");
    lua_getfield(L, -2, "class");
    int cls = lua_isnil(L, -1) ? MOCDC_STR : class_of(L, lua_tostring(L, -1));
    if (mocdc_batch_set_column(b, i - 1, lua_tostring(L, -2), cls) != 0)
      return luaL_error(L, "out of memory");
    lua_pop(L, 3);
  }
  return 1;
}

static int op_of(lua_State *L, int idx) {
  return luaL_checkoption(L, idx, NULL, op_names) + 1;
}

/* Read one image at stack index `idx` into v/len (ncols entries). Named: keys
 * are column names. Values: string, number, NULL lightuserdata or nil = SQL
 * NULL. Strings stay referenced by the image table; a number is formatted
 * exactly (integers as integers, others with 17 digits) into a string that is
 * left on the stack until the caller returns. */
static void read_image(lua_State *L, mocdc_batch *b, int idx, int named, const char **v,
                       unsigned long *len) {
  for (int c = 0; c < b->ncols; c++) {
    if (named) lua_getfield(L, idx, b->names[c]);
    else lua_rawgeti(L, idx, c + 1);
    int t = lua_type(L, -1);
    if (t == LUA_TSTRING) {
      size_t l;
      v[c] = lua_tolstring(L, -1, &l);
      len[c] = l;
    } else if (t == LUA_TNUMBER) {
      char tmp[64];
      lua_Number x = lua_tonumber(L, -1);
      int l;
      if (x > -9.2e18 && x < 9.2e18 && x == (lua_Number)(long long)x)
        l = snprintf(tmp, sizeof tmp, "%lld", (long long)x);
      else
        l = snprintf(tmp, sizeof tmp, "%.17g", (double)x);
      lua_pop(L, 1);
      lua_pushlstring(L, tmp, (size_t)l);
      v[c] = lua_tostring(L, -1);
      len[c] = (unsigned long)l;
      continue; /* keep the string on the stack */
    } else if (t == LUA_TNIL || (t == LUA_TLIGHTUSERDATA && lua_touserdata(L, -1) == NULL)) {
      v[c] = NULL;
      len[c] = 0;
    } else {
      luaL_error(L, "column '%s' holds a %s", b->names[c], luaL_typename(L, -1));
    }
    lua_pop(L, 1);
  }
}

static int add_impl(lua_State *L, int named) {
  mocdc_batch *b = mocdc_batch_check(L, 1);
  int op = op_of(L, 2);
  int has_before = !lua_isnoneornil(L, 3), has_after = !lua_isnoneornil(L, 4);
  if (has_before) luaL_checktype(L, 3, LUA_TTABLE);
  if (has_after) luaL_checktype(L, 4, LUA_TTABLE);
  int64_t ts = (int64_t)luaL_optnumber(L, 5, 0);
  if ((op == MOCDC_INSERT || op == MOCDC_UPDATE) && !has_after)
    luaL_argerror(L, 4, "insert and update need an after image");
  if ((op == MOCDC_DELETE || op == MOCDC_UPDATE) && !has_before)
    luaL_argerror(L, 3, "update and delete need a before image");
  int n = b->ncols;
  luaL_checkstack(L, 2 * n + 8, "too many columns");
  /* value pointers: on the C stack for usual widths, else in a GC'd userdata */
  enum { SMALL = 128 };
  const char *sv[2][SMALL];
  unsigned long sl[2][SMALL];
  const char **bv = sv[0], **av = sv[1];
  unsigned long *bl = sl[0], *al = sl[1];
  if (n > SMALL) {
    size_t per = (sizeof(const char *) + sizeof(unsigned long)) * (size_t)n;
    char *scratch = lua_newuserdata(L, 2 * per);
    bv = (const char **)scratch;
    bl = (unsigned long *)(scratch + sizeof(const char *) * (size_t)n);
    av = (const char **)(scratch + per);
    al = (unsigned long *)(scratch + per + sizeof(const char *) * (size_t)n);
  }
  if (has_before) read_image(L, b, 3, named, bv, bl);
  if (has_after) read_image(L, b, 4, named, av, al);
  if (mocdc_batch_add(b, op, ts, has_before ? bv : NULL, bl, has_after ? av : NULL, al) != 0)
    return luaL_error(L, "batch add failed: out of memory or batch over 4 GiB");
  return 0;
}

static int l_add(lua_State *L) { return add_impl(L, 0); }
static int l_add_named(lua_State *L) { return add_impl(L, 1); }

static void push_image(lua_State *L, mocdc_batch *b, uint32_t image, int named) {
  if (image == MOCDC_NO_IMAGE) {
    lua_pushnil(L);
    return;
  }
  if (named) lua_createtable(L, 0, b->ncols);
  else lua_createtable(L, b->ncols, 0);
  for (int c = 0; c < b->ncols; c++) {
    size_t len;
    const char *v = mocdc_batch_val(b, image, c, &len);
    if (named) {
      if (!v) continue; /* NULL = absent key */
      lua_pushlstring(L, v, len);
      lua_setfield(L, -2, b->names[c]);
    } else {
      if (v) lua_pushlstring(L, v, len);
      else lua_pushlightuserdata(L, NULL);
      lua_rawseti(L, -2, c + 1);
    }
  }
}

static int get_impl(lua_State *L, int named) {
  mocdc_batch *b = mocdc_batch_check(L, 1);
  lua_Integer i = luaL_checkinteger(L, 2);
  if (i < 1 || (size_t)i > b->nrows) return luaL_argerror(L, 2, "row index out of range");
  const mocdc_row *r = &b->rows[i - 1];
  lua_pushstring(L, op_names[r->op - 1]);
  push_image(L, b, r->before, named);
  push_image(L, b, r->after, named);
  lua_pushnumber(L, (lua_Number)r->ts);
  return 4;
}

static int l_get(lua_State *L) { return get_impl(L, 0); }
static int l_get_named(lua_State *L) { return get_impl(L, 1); }

/* batch:append(other[, from[, to]]) -> count: copy rows from..to (1-based,
 * default all) of `other` (same column count) to the end of this batch. */
static int l_append(lua_State *L) {
  mocdc_batch *b = mocdc_batch_check(L, 1);
  mocdc_batch *o = mocdc_batch_check(L, 2);
  if (o == b) return luaL_argerror(L, 2, "cannot append a batch to itself");
  if (o->ncols != b->ncols) return luaL_argerror(L, 2, "batch with a different column count");
  lua_Integer from = luaL_optinteger(L, 3, 1), to = luaL_optinteger(L, 4, (lua_Integer)o->nrows);
  if (from < 1) from = 1;
  if (to > (lua_Integer)o->nrows) to = (lua_Integer)o->nrows;
  int n = o->ncols;
  const char **bv = malloc(sizeof(char *) * (size_t)(n ? n : 1) * 2);
  unsigned long *bl = malloc(sizeof(unsigned long) * (size_t)(n ? n : 1) * 2);
  if (!bv || !bl) { free(bv); free(bl); return luaL_error(L, "out of memory"); }
  const char **av = bv + n;
  unsigned long *al = bl + n;
  for (lua_Integer i = from; i <= to; i++) {
    const mocdc_row *r = &o->rows[i - 1];
    for (int c = 0; c < n; c++) {
      size_t len;
      if (r->before != MOCDC_NO_IMAGE) { bv[c] = mocdc_batch_val(o, r->before, c, &len); bl[c] = len; }
      if (r->after != MOCDC_NO_IMAGE) { av[c] = mocdc_batch_val(o, r->after, c, &len); al[c] = len; }
    }
    if (mocdc_batch_add(b, r->op, r->ts, r->before != MOCDC_NO_IMAGE ? bv : NULL, bl,
                        r->after != MOCDC_NO_IMAGE ? av : NULL, al) != 0) {
      free(bv); free(bl);
      return luaL_error(L, "batch:append: out of memory (or a batch over 4 GiB)");
    }
  }
  free(bv); free(bl);
  lua_pushinteger(L, (lua_Integer)b->nrows);
  return 1;
}

static int l_count(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)mocdc_batch_check(L, 1)->nrows);
  return 1;
}

/* counts() -> inserts, updates, deletes */
static int l_counts(lua_State *L) {
  mocdc_batch *b = mocdc_batch_check(L, 1);
  lua_Integer n[4] = {0, 0, 0, 0};
  for (size_t i = 0; i < b->nrows; i++) n[b->rows[i].op]++;
  lua_pushinteger(L, n[MOCDC_INSERT]);
  lua_pushinteger(L, n[MOCDC_UPDATE]);
  lua_pushinteger(L, n[MOCDC_DELETE]);
  return 3;
}

static int l_bytes(lua_State *L) {
  lua_pushnumber(L, (lua_Number)mocdc_batch_bytes(mocdc_batch_check(L, 1)));
  return 1;
}

static int l_clear(lua_State *L) {
  mocdc_batch_clear(mocdc_batch_check(L, 1));
  return 0;
}

static int l_columns(lua_State *L) {
  mocdc_batch *b = mocdc_batch_check(L, 1);
  lua_createtable(L, b->ncols, 0);
  for (int c = 0; c < b->ncols; c++) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, b->names[c]);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, class_names[b->cls[c]]);
    lua_setfield(L, -2, "class");
    lua_rawseti(L, -2, c + 1);
  }
  return 1;
}

/* free(): explicit and idempotent; later use raises "batch is freed". */
static int l_free(lua_State *L) { return l_gc(L); }

static int l_tostring(lua_State *L) {
  batch_ud *u = luaL_checkudata(L, 1, BATCH_MT);
  if (!u->b) lua_pushstring(L, "mocdc.batch (freed)");
  else lua_pushfstring(L, "mocdc.batch (%d columns, %d rows)", u->b->ncols, (int)u->b->nrows);
  return 1;
}

static const luaL_Reg batch_methods[] = {
    {"add", l_add},     {"add_named", l_add_named}, {"get", l_get},     {"get_named", l_get_named},
    {"count", l_count}, {"bytes", l_bytes},         {"clear", l_clear}, {"columns", l_columns},
    {"free", l_free},   {"append", l_append}, {"counts", l_counts}, {NULL, NULL}};

/* Create the metatable on first use: conn.c may push a batch before anyone
 * required mocdc.batch.lib. Leaves nothing on the stack. */
static void ensure_mt(lua_State *L) {
  mocdc_class(L, BATCH_MT, batch_methods, l_gc, l_tostring);
}

void mocdc_batch_push(lua_State *L, mocdc_batch *b) {
  batch_ud *u = lua_newuserdata(L, sizeof *u);
  u->b = b;
  ensure_mt(L);
  luaL_getmetatable(L, BATCH_MT);
  lua_setmetatable(L, -2);
}

mocdc_batch *mocdc_batch_check(lua_State *L, int idx) {
  batch_ud *u = luaL_checkudata(L, idx, BATCH_MT);
  if (!u->b) luaL_error(L, "attempt to use a freed batch");
  return u->b;
}

int luaopen_mocdc_batch_lib(lua_State *L) {
  ensure_mt(L);
  lua_newtable(L);
  lua_pushcfunction(L, l_new);
  lua_setfield(L, -2, "new");
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "NULL");
  return 1;
}
