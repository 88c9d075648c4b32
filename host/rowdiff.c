/* mocdc.rowdiff.lib: the row level of snapshot diffing (lua/stdlib/mocdc/rowdiff.lua
 * is its public API; lua/stdlib/mocdc/engine/snapdiff.lua the engine that uses it).
 *
 * rows(old, new, key, out) -> inserts, updates, deletes
 *   `old` holds the previous state of a key range (the sink's rows, or a
 *   time-travel read), `new` the current source rows of the same range; both
 *   batches have the same column list, rows in any order (each row's after
 *   image, else its before image). The difference is appended to `out` (same
 *   columns): insert(after = new row) for a key only in `new`,
 *   update(before = old, after = new) for a key in both whose row differs in
 *   any byte or NULL flag, delete(before = old) for a key only in `old`.
 *   Keys are compared byte for byte, so the result does not depend on the
 *   order (or the collation) either server sorted by; a key whose bytes
 *   changed but compare equal under a case-insensitive collation comes out as
 *   delete + insert, which the sink applies deletes-first, i.e. correctly.
 *   `key`: array of 1-based column indexes; empty = no key: every column is
 *   the key and rows are compared as a multiset (a duplicated row counts
 *   twice), so the output deletes / inserts exactly the surplus copies.
 *   One hash table over `old` (open addressing, 2x its row count), one pass
 *   over `new`; no per-row allocation besides `out`'s arena.
 *
 * sum_add(a, b) -> decimal string: exact sum of two non-negative decimal
 *   integers given as strings (chunk checksums are SUMs of 64-bit values that
 *   exceed a double; merging two chunks adds them). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "batch.h"
#include "mocdc.h"

#define MAX_KEY_COLS 64

typedef struct {
  const mocdc_batch *b;
  const int *key; /* 0-based column indexes */
  int nkey;
} keyspec;

/* The image a row is compared by: after (insert/update), else before. */
static uint32_t row_image(const mocdc_batch *b, size_t i) {
  const mocdc_row *r = &b->rows[i];
  return r->after != MOCDC_NO_IMAGE ? r->after : r->before;
}

static uint64_t mix(uint64_t h, const void *p, size_t n) {
  const unsigned char *s = (const unsigned char *)p;
  for (size_t i = 0; i < n; i++) {
    h ^= s[i];
    h *= 0x100000001b3ULL; /* FNV-1a 64 */
  }
  return h;
}

static uint64_t key_hash(const keyspec *k, uint32_t img) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (int j = 0; j < k->nkey; j++) {
    size_t len;
    const char *v = mocdc_batch_val(k->b, img, k->key[j], &len);
    if (!v) {
      h = mix(h, "\xff\xfe", 2);
    } else {
      uint32_t l = (uint32_t)len;
      h = mix(h, &l, sizeof l);
      h = mix(h, v, len);
    }
  }
  /* final avalanche so that the low bits used for the slot are well mixed */
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h;
}

static int val_eq(const mocdc_batch *a, uint32_t ia, const mocdc_batch *b, uint32_t ib, int col) {
  size_t la, lb;
  const char *va = mocdc_batch_val(a, ia, col, &la);
  const char *vb = mocdc_batch_val(b, ib, col, &lb);
  if (!va || !vb) return !va && !vb;
  return la == lb && (la == 0 || memcmp(va, vb, la) == 0);
}

static int key_eq(const keyspec *ka, uint32_t ia, const keyspec *kb, uint32_t ib) {
  for (int j = 0; j < ka->nkey; j++)
    if (!val_eq(ka->b, ia, kb->b, ib, ka->key[j])) return 0;
  return 1;
}

static int row_eq(const mocdc_batch *a, uint32_t ia, const mocdc_batch *b, uint32_t ib) {
  for (int c = 0; c < a->ncols; c++)
    if (!val_eq(a, ia, b, ib, c)) return 0;
  return 1;
}

/* Pointer/length arrays of one image, for mocdc_batch_add. */
static void image_ptrs(const mocdc_batch *b, uint32_t img, const char **v, unsigned long *l) {
  for (int c = 0; c < b->ncols; c++) {
    size_t len;
    v[c] = mocdc_batch_val(b, img, c, &len);
    l[c] = (unsigned long)len;
  }
}

typedef struct {
  uint32_t *slots;  /* old row index + 1; 0 = empty */
  uint64_t *hashes; /* hash of the slot's key */
  uint8_t *used;    /* per old row: matched by a new row */
  const char **v1, **v2;
  unsigned long *l1, *l2;
} workspace;

static void ws_free(workspace *w) {
  free(w->slots);
  free(w->hashes);
  free(w->used);
  free(w->v1);
  free(w->v2);
  free(w->l1);
  free(w->l2);
  memset(w, 0, sizeof *w);
}

static int l_rows(lua_State *L) {
  mocdc_batch *old = mocdc_batch_check(L, 1);
  mocdc_batch *cur = mocdc_batch_check(L, 2);
  luaL_checktype(L, 3, LUA_TTABLE);
  mocdc_batch *out = mocdc_batch_check(L, 4);
  if (old->ncols != cur->ncols || out->ncols != cur->ncols)
    return luaL_error(L, "rowdiff.rows: batches have different column counts (%d, %d, %d)", old->ncols,
                      cur->ncols, out->ncols);
  if (out == old || out == cur) return luaL_argerror(L, 4, "out must be a third batch");
  int key[MAX_KEY_COLS];
  int nkey = (int)lua_objlen(L, 3);
  if (nkey > MAX_KEY_COLS) return luaL_argerror(L, 3, "too many key columns");
  for (int j = 0; j < nkey; j++) {
    lua_rawgeti(L, 3, j + 1);
    int k = (int)lua_tointeger(L, -1);
    lua_pop(L, 1);
    if (k < 1 || k > cur->ncols) return luaL_argerror(L, 3, "key column index out of range");
    key[j] = k - 1;
  }
  int ncols = cur->ncols;
  if (nkey == 0) { /* no key: the whole row is the key (multiset) */
    if (ncols > MAX_KEY_COLS) return luaL_argerror(L, 3, "a table without a key may have at most 64 columns");
    for (int c = 0; c < ncols; c++) key[c] = c;
    nkey = ncols;
  }
  keyspec ko = {old, key, nkey}, kn = {cur, key, nkey};

  workspace w;
  memset(&w, 0, sizeof w);
  size_t cap = 16;
  while (cap < old->nrows * 2 + 1) cap *= 2;
  size_t nc = ncols ? (size_t)ncols : 1;
  w.slots = calloc(cap, sizeof *w.slots);
  w.hashes = calloc(cap, sizeof *w.hashes);
  w.used = calloc(old->nrows ? old->nrows : 1, 1);
  w.v1 = calloc(nc, sizeof *w.v1);
  w.v2 = calloc(nc, sizeof *w.v2);
  w.l1 = calloc(nc, sizeof *w.l1);
  w.l2 = calloc(nc, sizeof *w.l2);
  if (!w.slots || !w.hashes || !w.used || !w.v1 || !w.v2 || !w.l1 || !w.l2) {
    ws_free(&w);
    return luaL_error(L, "rowdiff.rows: out of memory");
  }
  size_t mask = cap - 1;
  for (size_t i = 0; i < old->nrows; i++) {
    uint64_t h = key_hash(&ko, row_image(old, i));
    size_t s = (size_t)h & mask;
    while (w.slots[s]) s = (s + 1) & mask;
    w.slots[s] = (uint32_t)(i + 1);
    w.hashes[s] = h;
  }
  double ins = 0, upd = 0, del = 0;
  int oom = 0;
  for (size_t i = 0; i < cur->nrows && !oom; i++) {
    uint32_t img = row_image(cur, i);
    uint64_t h = key_hash(&kn, img);
    size_t s = (size_t)h & mask;
    long found = -1;
    for (; w.slots[s]; s = (s + 1) & mask) {
      size_t oi = w.slots[s] - 1;
      if (w.hashes[s] != h || w.used[oi]) continue;
      if (key_eq(&ko, row_image(old, oi), &kn, img)) {
        found = (long)oi;
        break;
      }
    }
    image_ptrs(cur, img, w.v2, w.l2);
    if (found < 0) {
      oom = mocdc_batch_add(out, MOCDC_INSERT, 0, NULL, NULL, w.v2, w.l2) != 0;
      ins++;
      continue;
    }
    w.used[found] = 1;
    uint32_t oimg = row_image(old, (size_t)found);
    if (!row_eq(old, oimg, cur, img)) {
      image_ptrs(old, oimg, w.v1, w.l1);
      oom = mocdc_batch_add(out, MOCDC_UPDATE, 0, w.v1, w.l1, w.v2, w.l2) != 0;
      upd++;
    }
  }
  for (size_t i = 0; i < old->nrows && !oom; i++) {
    if (w.used[i]) continue;
    image_ptrs(old, row_image(old, i), w.v1, w.l1);
    oom = mocdc_batch_add(out, MOCDC_DELETE, 0, w.v1, w.l1, NULL, NULL) != 0;
    del++;
  }
  ws_free(&w);
  if (oom) return luaL_error(L, "rowdiff.rows: out of memory");
  lua_pushnumber(L, ins);
  lua_pushnumber(L, upd);
  lua_pushnumber(L, del);
  return 3;
}

/* Exact sum of two non-negative decimal integer strings. */
static int l_sum_add(lua_State *L) {
  size_t la, lb;
  const char *a = luaL_checklstring(L, 1, &la);
  const char *b = luaL_checklstring(L, 2, &lb);
  for (size_t i = 0; i < la; i++)
    if (a[i] < '0' || a[i] > '9') return luaL_argerror(L, 1, "not a non-negative decimal integer");
  for (size_t i = 0; i < lb; i++)
    if (b[i] < '0' || b[i] > '9') return luaL_argerror(L, 2, "not a non-negative decimal integer");
  size_t n = (la > lb ? la : lb) + 1;
  luaL_Buffer buf;
  char tmp[128];
  char *r = n <= sizeof tmp ? tmp : (char *)lua_newuserdata(L, n);
  int carry = 0;
  for (size_t i = 0; i < n; i++) {
    int d = carry;
    if (i < la) d += a[la - 1 - i] - '0';
    if (i < lb) d += b[lb - 1 - i] - '0';
    r[n - 1 - i] = (char)('0' + d % 10);
    carry = d / 10;
  }
  size_t start = 0;
  while (start + 1 < n && r[start] == '0') start++;
  luaL_buffinit(L, &buf);
  luaL_addlstring(&buf, r + start, n - start);
  luaL_pushresult(&buf);
  return 1;
}

int luaopen_mocdc_rowdiff_lib(lua_State *L) {
  static const luaL_Reg fns[] = {{"rows", l_rows}, {"sum_add", l_sum_add}, {NULL, NULL}};
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  return 1;
}
