/* mocdc.sqlbuild.lib: turns a batch of row changes into sink SQL (the hot path
 * of change apply).
 *
 * build(batch, opts) -> {sql, ...}, {deletes=, upserts=} | nil, msg
 *
 * Keyed tables (opts.key non-empty). Rows are collapsed per key in a hash
 * table, comparing key values byte for byte: the last change of a key wins; an
 * update that changes the key is a delete of the old key plus an upsert of the
 * new one. Then every delete comes before every upsert (deletes first is what
 * makes "update a->b, insert a" correct). Keys are emitted in order of first
 * appearance in the batch. After collapsing no key appears twice, so a REPLACE
 * never holds two rows with one key (MatrixOne issue 24473).
 *   replace: REPLACE INTO t (cols) VALUES (...),(...)
 *   upsert:  INSERT INTO t (cols) VALUES ... ON DUPLICATE KEY UPDATE c=VALUES(c)
 *   insert:  INSERT INTO t (cols) VALUES ...; a key the batch updated or
 *            deleted is deleted first too (delete + insert), so a plain INSERT
 *            never collides with the row it replaces.
 *   deletes: single key  DELETE FROM t WHERE `k` IN (1,2)
 *            composite   DELETE FROM t WHERE (`a`,`b`) IN ((1,2),(3,4))        (mysql)
 *                        DELETE FROM t WHERE (`a` = 1 and `b` = 2) or (...)    (matrixone)
 *            a key holding a NULL (a unique key, not a PK) gets its own
 *            DELETE FROM t WHERE `a` <=> NULL AND `b` <=> 2, since IN never matches NULL.
 *
 * Tables without a key (opts.key empty). A row is identified only by all its
 * values, so the batch is reduced as a multiset: an insert counts +1 for its
 * exact row, a delete -1, an update -1 for the before row and +1 for the after
 * row. Identical rows cancel (insert X then delete X leaves nothing, which is
 * what makes reordering safe: every remaining delete hits a row that existed
 * before the batch). Then, deletes first:
 *   DELETE FROM t WHERE `a` <=> 1 AND `b` <=> 'x' LIMIT n   (n = copies removed, NULL-safe)
 * one statement per distinct deleted row, then plain INSERTs (never REPLACE:
 * without a key REPLACE is an INSERT anyway, and duplicates are legal).
 * Limits: FLOAT columns (compared as DOUBLE) and, on MySQL, JSON columns never
 * compare equal to their text form, so such deletes match nothing.
 *
 * opts.skip: 1-based indexes of columns never written nor matched on (generated
 * columns: the sink computes them): left out of INSERT/REPLACE column lists,
 * tuples and ON DUPLICATE KEY UPDATE, and of a keyless row's identity.
 *
 * Every statement is <= opts.max_len bytes; a row that cannot fit alone is an
 * error naming its key. All SQL is written into one reusable buffer held by
 * the module (no per-row allocation). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "batch.h"
#include "mocdc.h"

#define SCRATCH_MT "mocdc.sqlbuild.scratch"
#define DEFAULT_MAX_LEN 4194304
#define SHOW_MAX 64 /* bytes of a value shown in an error */

enum { MODE_REPLACE, MODE_INSERT, MODE_UPSERT };
enum { DIALECT_MYSQL, DIALECT_MATRIXONE };
enum { ST_UPSERT = 1, ST_DELETE = 2 };

typedef struct {
  uint64_t hash;
  uint32_t img;     /* image holding the key (and, for upserts, the row) */
  uint8_t state;    /* ST_UPSERT | ST_DELETE (keyed) */
  uint8_t existed;  /* an update/delete touched this key: it may exist in the sink */
  int32_t net;      /* no-key tables: inserts - deletes of this exact row */
} slot;

/* Reusable memory, owned by a userdata upvalue (freed at lua_close). */
typedef struct {
  mocdc_buf sql;    /* the statement being built */
  mocdc_buf tmp;    /* a row carried over a split; error messages */
  slot *slots;
  size_t cap_slots;
  uint32_t *tab;    /* open addressing: slot index + 1, 0 = empty */
  size_t cap_tab;
  int *keys;
  size_t cap_keys;
  char *skip;       /* per column: 1 = never written (opts.skip) */
  size_t cap_skip;
} scratch;

/* What one build() call needs. */
typedef struct {
  lua_State *L;
  scratch *sc;
  const mocdc_batch *b;
  const char *table;
  size_t table_len;
  int *key;          /* 0-based key column indexes */
  int nkey;
  int *hkey;         /* columns that identify a row: the key, or all written columns */
  int nhkey;
  const char *skip;  /* per column, or NULL: see opts.skip */
  int mode, dialect;
  size_t max_len;
  int nout;          /* statements pushed into the result table (at stack index out_idx) */
  int out_idx;
  size_t tabsize;    /* slots of sc->tab in use (power of two) */
} ctx;

/* ---- literals ------------------------------------------------------------ */

static const char hexdig[] = "0123456789ABCDEF";

/* Escape char for each byte in a '...' string literal (0 = copy as is). */
static char esc[256];

static void init_tables(void) {
  esc[0] = '0';
  esc['\''] = '\'';
  esc['"'] = '"';
  esc['\\'] = '\\';
  esc['\n'] = 'n';
  esc['\r'] = 'r';
  esc[0x1a] = 'Z';
}

/* Does `v` look like a number MySQL accepts bare: [+-]digits[.digits][e[+-]digits]? */
static int looks_numeric(const char *v, size_t len) {
  size_t i = 0, digits = 0;
  if (i < len && (v[i] == '-' || v[i] == '+')) i++;
  while (i < len && v[i] >= '0' && v[i] <= '9') i++, digits++;
  if (i < len && v[i] == '.') {
    i++;
    while (i < len && v[i] >= '0' && v[i] <= '9') i++, digits++;
  }
  if (!digits) return 0;
  if (i < len && (v[i] == 'e' || v[i] == 'E')) {
    i++;
    if (i < len && (v[i] == '-' || v[i] == '+')) i++;
    size_t ed = 0;
    while (i < len && v[i] >= '0' && v[i] <= '9') i++, ed++;
    if (!ed) return 0;
  }
  return i == len;
}

/* Append the SQL literal of one value. 0 or -1 on OOM. */
static int put_val(mocdc_buf *s, int cls, const char *v, size_t len) {
  if (!v) return mocdc_buf_addlit(s, "NULL");
  if (cls == MOCDC_NUM && looks_numeric(v, len)) return mocdc_buf_add(s, v, len);
  if (cls == MOCDC_BIN) {
    if (len == 0) return mocdc_buf_addlit(s, "''");
    if (mocdc_buf_reserve(s, 2 * len + 3) != 0) return -1;
    char *o = s->p + s->len;
    *o++ = 'X';
    *o++ = '\'';
    for (size_t i = 0; i < len; i++) {
      unsigned char c = (unsigned char)v[i];
      *o++ = hexdig[c >> 4];
      *o++ = hexdig[c & 15];
    }
    *o++ = '\'';
    s->len = (size_t)(o - s->p);
    return 0;
  }
  if (cls == MOCDC_BIT) {
    if (mocdc_buf_reserve(s, 8 * len + 3) != 0) return -1;
    char *o = s->p + s->len;
    *o++ = 'b';
    *o++ = '\'';
    for (size_t i = 0; i < len; i++) {
      unsigned char c = (unsigned char)v[i];
      for (int k = 7; k >= 0; k--) *o++ = (char)('0' + ((c >> k) & 1));
    }
    *o++ = '\'';
    s->len = (size_t)(o - s->p);
    return 0;
  }
  /* str, and a num that does not look numeric (never emitted bare) */
  if (mocdc_buf_reserve(s, 2 * len + 2) != 0) return -1;
  char *o = s->p + s->len;
  *o++ = '\'';
  size_t run = 0;
  for (size_t i = 0; i < len; i++) {
    char e = esc[(unsigned char)v[i]];
    if (!e) continue;
    if (i > run) {
      memcpy(o, v + run, i - run);
      o += i - run;
    }
    *o++ = '\\';
    *o++ = e;
    run = i + 1;
  }
  if (len > run) {
    memcpy(o, v + run, len - run);
    o += len - run;
  }
  *o++ = '\'';
  s->len = (size_t)(o - s->p);
  return 0;
}

static int put_ident(mocdc_buf *s, const char *name) {
  size_t len = strlen(name);
  if (mocdc_buf_reserve(s, 2 * len + 2) != 0) return -1;
  char *o = s->p + s->len;
  *o++ = '`';
  for (size_t i = 0; i < len; i++) {
    if (name[i] == '`') *o++ = '`';
    *o++ = name[i];
  }
  *o++ = '`';
  s->len = (size_t)(o - s->p);
  return 0;
}

/* ---- hashing ------------------------------------------------------------- */

static inline uint64_t mix(uint64_t h, uint64_t x) {
  h ^= x;
  h *= 0x9E3779B97F4A7C15ull;
  return h ^ (h >> 29);
}

static uint64_t hash_bytes(uint64_t h, const char *p, size_t n) {
  h = mix(h, n);
  while (n >= 8) {
    uint64_t x;
    memcpy(&x, p, 8);
    h = mix(h, x);
    p += 8;
    n -= 8;
  }
  uint64_t x = 0;
  memcpy(&x, p, n);
  return mix(h, x);
}

static uint64_t key_hash(const ctx *c, uint32_t img) {
  uint64_t h = 0x243F6A8885A308D3ull;
  for (int k = 0; k < c->nhkey; k++) {
    size_t len;
    const char *v = mocdc_batch_val(c->b, img, c->hkey[k], &len);
    h = v ? hash_bytes(h, v, len) : mix(h, 0xA5A5A5A5A5A5A5A5ull);
  }
  return h;
}

static int key_equal(const ctx *c, uint32_t a, uint32_t b) {
  for (int k = 0; k < c->nhkey; k++) {
    size_t la, lb;
    const char *va = mocdc_batch_val(c->b, a, c->hkey[k], &la);
    const char *vb = mocdc_batch_val(c->b, b, c->hkey[k], &lb);
    if (!va || !vb) {
      if (va != vb) return 0;
      continue;
    }
    if (la != lb || memcmp(va, vb, la) != 0) return 0;
  }
  return 1;
}

/* Find or create the slot of the key in image `img`. */
static slot *lookup(ctx *c, size_t *nslots, uint32_t img) {
  scratch *sc = c->sc;
  uint64_t h = key_hash(c, img);
  size_t mask = c->tabsize - 1;
  for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
    uint32_t e = sc->tab[i];
    if (!e) {
      slot *s = &sc->slots[*nslots];
      sc->tab[i] = (uint32_t)++*nslots;
      s->hash = h;
      s->img = img;
      s->state = 0;
      s->existed = 0;
      s->net = 0;
      return s;
    }
    slot *s = &sc->slots[e - 1];
    if (s->hash == h && key_equal(c, s->img, img)) return s;
  }
}

/* ---- statement assembly ------------------------------------------------- */

/* Push sc->sql[0..len) as the next statement. */
static void emit(ctx *c, size_t len) {
  lua_pushlstring(c->L, c->sc->sql.p, len);
  lua_rawseti(c->L, c->out_idx, ++c->nout);
}

/* Describe the row's key (or all columns without a key) as `(a=1, b='x')`
 * into sc->tmp; values cut to SHOW_MAX bytes on a UTF-8 boundary. */
static const char *describe(ctx *c, uint32_t img) {
  mocdc_buf *t = &c->sc->tmp;
  t->len = 0;
  if (mocdc_buf_addlit(t, "(") != 0) return "(?)";
  for (int k = 0; k < c->nhkey; k++) {
    int col = c->hkey[k];
    size_t len;
    const char *v = mocdc_batch_val(c->b, img, col, &len);
    if (k && mocdc_buf_addlit(t, ", ") != 0) return "(?)";
    const char *name = c->b->names[col];
    if (mocdc_buf_add(t, name, strlen(name)) != 0 || mocdc_buf_addlit(t, "=") != 0) return "(?)";
    size_t start = t->len;
    if (put_val(t, c->b->cls[col], v, len) != 0) return "(?)";
    if (t->len - start > SHOW_MAX) {
      size_t cut = start + SHOW_MAX;
      while (cut > start && ((unsigned char)t->p[cut] & 0xC0) == 0x80) cut--;
      t->len = cut;
      if (mocdc_buf_addlit(t, "...") != 0) return "(?)";
    }
  }
  if (mocdc_buf_addlit(t, ")") != 0 || mocdc_buf_reserve(t, 1) != 0) return "(?)";
  t->p[t->len] = '\0';
  return t->p;
}

/* Push the "row too big" message; returns -2. */
static int oversize(ctx *c, uint32_t img, size_t need) {
  char nums[64];
  snprintf(nums, sizeof nums, " needs %zu bytes, more than max-sql-length %zu", need, c->max_len);
  lua_pushfstring(c->L, "row %s%s%s", c->nkey ? "with key " : "", describe(c, img), nums);
  return -2;
}

/* A run of items joined by `sep` between `prefix` and `suffix`, split so that
 * each statement is <= max_len: run_start(), then per item run_begin_item(),
 * render the item into sc->sql, run_commit_item(); finally run_finish(). An
 * item that overflows is carried over to a new statement (a copy only at
 * split points). */
typedef struct {
  const char *prefix; size_t prefix_len;
  const char *sep; size_t sep_len;
  const char *suffix; size_t suffix_len;
  size_t items;      /* items in the current statement */
  size_t mark;       /* sql length before the current item's separator */
} run;

static int run_start(ctx *c, run *r) {
  c->sc->sql.len = 0;
  r->items = 0;
  return mocdc_buf_add(&c->sc->sql, r->prefix, r->prefix_len);
}

static int run_begin_item(ctx *c, run *r) {
  r->mark = c->sc->sql.len;
  return r->items ? mocdc_buf_add(&c->sc->sql, r->sep, r->sep_len) : 0;
}

/* After rendering an item: keep it, or flush the statement before it and
 * start a new one with it. Returns 0, -1 on OOM, -2 if the item cannot fit
 * alone (error message left on the Lua stack). */
static int run_commit_item(ctx *c, run *r, uint32_t img) {
  mocdc_buf *sql = &c->sc->sql;
  if (sql->len + r->suffix_len <= c->max_len) {
    r->items++;
    return 0;
  }
  size_t item_start = r->mark + (r->items ? r->sep_len : 0);
  size_t item_len = sql->len - item_start;
  size_t alone = r->prefix_len + item_len + r->suffix_len;
  if (r->items == 0 || alone > c->max_len) {
    return oversize(c, img, alone);
  }
  /* carry the item over to a new statement */
  mocdc_buf *tmp = &c->sc->tmp;
  tmp->len = 0;
  if (mocdc_buf_add(tmp, sql->p + item_start, item_len) != 0) return -1;
  sql->len = r->mark;
  if (mocdc_buf_add(sql, r->suffix, r->suffix_len) != 0) return -1;
  emit(c, sql->len);
  if (run_start(c, r) != 0 || mocdc_buf_add(sql, tmp->p, tmp->len) != 0) return -1;
  r->items = 1;
  return 0;
}

static int run_finish(ctx *c, run *r) {
  if (!r->items) return 0;
  if (mocdc_buf_add(&c->sc->sql, r->suffix, r->suffix_len) != 0) return -1;
  emit(c, c->sc->sql.len);
  return 0;
}

/* Render the VALUES tuple of image `img`. */
static int put_tuple(ctx *c, uint32_t img) {
  mocdc_buf *s = &c->sc->sql;
  if (mocdc_buf_addlit(s, "(") != 0) return -1;
  int first = 1;
  for (int col = 0; col < c->b->ncols; col++) {
    if (c->skip && c->skip[col]) continue;
    size_t len;
    const char *v = mocdc_batch_val(c->b, img, col, &len);
    if (!first && mocdc_buf_addlit(s, ",") != 0) return -1;
    first = 0;
    if (put_val(s, c->b->cls[col], v, len) != 0) return -1;
  }
  return mocdc_buf_addlit(s, ")");
}

/* The key part of a delete for image `img`, in the form the statement uses. */
static int put_key_item(ctx *c, uint32_t img) {
  mocdc_buf *s = &c->sc->sql;
  const mocdc_batch *b = c->b;
  size_t len;
  if (c->nkey == 1) {
    const char *v = mocdc_batch_val(b, img, c->key[0], &len);
    return put_val(s, b->cls[c->key[0]], v, len);
  }
  if (c->dialect == DIALECT_MATRIXONE) {
    if (mocdc_buf_addlit(s, "(") != 0) return -1;
    for (int k = 0; k < c->nkey; k++) {
      const char *v = mocdc_batch_val(b, img, c->key[k], &len);
      if (k && mocdc_buf_addlit(s, " and ") != 0) return -1;
      if (put_ident(s, b->names[c->key[k]]) != 0 || mocdc_buf_addlit(s, " = ") != 0 ||
          put_val(s, b->cls[c->key[k]], v, len) != 0)
        return -1;
    }
    return mocdc_buf_addlit(s, ")");
  }
  if (mocdc_buf_addlit(s, "(") != 0) return -1;
  for (int k = 0; k < c->nkey; k++) {
    const char *v = mocdc_batch_val(b, img, c->key[k], &len);
    if (k && mocdc_buf_addlit(s, ",") != 0) return -1;
    if (put_val(s, b->cls[c->key[k]], v, len) != 0) return -1;
  }
  return mocdc_buf_addlit(s, ")");
}

static int key_has_null(const ctx *c, uint32_t img) {
  for (int k = 0; k < c->nkey; k++) {
    size_t len;
    if (!mocdc_batch_val(c->b, img, c->key[k], &len)) return 1;
  }
  return 0;
}

/* DELETE FROM t WHERE `a` <=> v AND ... [LIMIT n]: over the key columns, or
 * over all columns without a key. One statement. */
static int null_safe_delete(ctx *c, uint32_t img, int32_t limit) {
  mocdc_buf *s = &c->sc->sql;
  const mocdc_batch *b = c->b;
  s->len = 0;
  if (mocdc_buf_addlit(s, "DELETE FROM ") != 0 || mocdc_buf_add(s, c->table, c->table_len) != 0 ||
      mocdc_buf_addlit(s, " WHERE ") != 0)
    return -1;
  for (int k = 0; k < c->nhkey; k++) {
    int col = c->hkey[k];
    size_t len;
    const char *v = mocdc_batch_val(b, img, col, &len);
    if (k && mocdc_buf_addlit(s, " AND ") != 0) return -1;
    if (put_ident(s, b->names[col]) != 0 || mocdc_buf_addlit(s, " <=> ") != 0 ||
        put_val(s, b->cls[col], v, len) != 0)
      return -1;
  }
  if (limit > 0) {
    char lim[32];
    int l = snprintf(lim, sizeof lim, " LIMIT %d", (int)limit);
    if (mocdc_buf_add(s, lim, (size_t)l) != 0) return -1;
  }
  if (s->len > c->max_len) {
    return oversize(c, img, s->len);
  }
  emit(c, s->len);
  return 0;
}

/* ---- build --------------------------------------------------------------- */

static int grow(void **p, size_t *cap, size_t need, size_t size) {
  if (need <= *cap) return 0;
  size_t n = *cap ? *cap : 64;
  while (n < need) n *= 2;
  void *q = realloc(*p, n * size);
  if (!q) return -1;
  *p = q;
  *cap = n;
  return 0;
}

/* Collapse the batch into slots (in order of first appearance). */
static int collapse(ctx *c, size_t *nslots) {
  const mocdc_batch *b = c->b;
  scratch *sc = c->sc;
  size_t need = b->nrows + 1; /* an update may touch two keys */
  for (size_t i = 0; i < b->nrows; i++) need += b->rows[i].op == MOCDC_UPDATE;
  size_t tab = 16;
  while (tab < 2 * need) tab *= 2;
  if (grow((void **)&sc->slots, &sc->cap_slots, need, sizeof *sc->slots) != 0) return -1;
  if (grow((void **)&sc->tab, &sc->cap_tab, tab, sizeof *sc->tab) != 0) return -1;
  memset(sc->tab, 0, tab * sizeof *sc->tab);
  c->tabsize = tab;
  *nslots = 0;
  for (size_t i = 0; i < b->nrows; i++) {
    const mocdc_row *r = &b->rows[i];
    if (!c->nkey) {
      /* multiset of exact rows */
      if (r->before != MOCDC_NO_IMAGE && r->op != MOCDC_INSERT) lookup(c, nslots, r->before)->net--;
      if (r->after != MOCDC_NO_IMAGE && r->op != MOCDC_DELETE) lookup(c, nslots, r->after)->net++;
      continue;
    }
    switch (r->op) {
    case MOCDC_INSERT: {
      slot *s = lookup(c, nslots, r->after);
      s->state = ST_UPSERT;
      s->img = r->after;
      break;
    }
    case MOCDC_DELETE: {
      slot *s = lookup(c, nslots, r->before);
      s->state = ST_DELETE;
      s->img = r->before;
      s->existed = 1;
      break;
    }
    case MOCDC_UPDATE: {
      slot *s = lookup(c, nslots, r->before);
      if (!key_equal(c, r->before, r->after)) {
        s->state = ST_DELETE;
        s->img = r->before;
        s->existed = 1;
        s = lookup(c, nslots, r->after);
      }
      s->state = ST_UPSERT;
      s->img = r->after;
      s->existed = 1;
      break;
    }
    }
  }
  return 0;
}

static int build_deletes(ctx *c, size_t nslots, lua_Integer *ndel) {
  scratch *sc = c->sc;
  const mocdc_batch *b = c->b;
  int rc;
  if (!c->nkey) {
    for (size_t i = 0; i < nslots; i++) {
      if (sc->slots[i].net >= 0) continue;
      if ((rc = null_safe_delete(c, sc->slots[i].img, -sc->slots[i].net)) != 0) return rc;
      *ndel += -sc->slots[i].net;
    }
    return 0;
  }
  /* statement shape */
  mocdc_buf *tmp = &sc->tmp;
  tmp->len = 0;
  if (mocdc_buf_addlit(tmp, "DELETE FROM ") != 0 || mocdc_buf_add(tmp, c->table, c->table_len) != 0 ||
      mocdc_buf_addlit(tmp, " WHERE ") != 0)
    return -1;
  run r = {0};
  if (c->nkey == 1) {
    if (put_ident(tmp, b->names[c->key[0]]) != 0 || mocdc_buf_addlit(tmp, " IN (") != 0) return -1;
    r.sep = ",", r.sep_len = 1, r.suffix = ")", r.suffix_len = 1;
  } else if (c->dialect == DIALECT_MATRIXONE) {
    r.sep = " or ", r.sep_len = 4, r.suffix = "", r.suffix_len = 0;
  } else {
    if (mocdc_buf_addlit(tmp, "(") != 0) return -1;
    for (int k = 0; k < c->nkey; k++) {
      if (k && mocdc_buf_addlit(tmp, ",") != 0) return -1;
      if (put_ident(tmp, b->names[c->key[k]]) != 0) return -1;
    }
    if (mocdc_buf_addlit(tmp, ") IN (") != 0) return -1;
    r.sep = ",", r.sep_len = 1, r.suffix = ")", r.suffix_len = 1;
  }
  /* the prefix must outlive tmp reuse (splits, errors): keep it in a Lua string */
  lua_pushlstring(c->L, tmp->p, tmp->len);
  r.prefix = lua_tolstring(c->L, -1, &r.prefix_len);
  int started = 0;
  for (size_t i = 0; i < nslots; i++) {
    slot *s = &sc->slots[i];
    int del = s->state == ST_DELETE || (c->mode == MODE_INSERT && s->existed);
    if (!del) continue;
    (*ndel)++;
    if (key_has_null(c, s->img)) {
      /* IN () never matches NULL: a statement of its own, after the run so far */
      if (started && run_finish(c, &r) != 0) { rc = -1; goto out; }
      started = 0;
      if ((rc = null_safe_delete(c, s->img, 0)) != 0) goto out;
      continue;
    }
    if (!started) {
      if (run_start(c, &r) != 0) { rc = -1; goto out; }
      started = 1;
    }
    if (run_begin_item(c, &r) != 0 || put_key_item(c, s->img) != 0) { rc = -1; goto out; }
    if ((rc = run_commit_item(c, &r, s->img)) != 0) goto out;
  }
  rc = started ? run_finish(c, &r) : 0;
out:
  if (rc == -2) lua_remove(c->L, -2); /* keep the message, drop the prefix */
  else lua_pop(c->L, 1);
  return rc;
}

static int build_upserts(ctx *c, size_t nslots, lua_Integer *nups) {
  scratch *sc = c->sc;
  const mocdc_batch *b = c->b;
  mocdc_buf *tmp = &sc->tmp;
  int rc;
  /* prefix */
  tmp->len = 0;
  int replace = c->mode == MODE_REPLACE && c->nkey;
  if (mocdc_buf_add(tmp, replace ? "REPLACE INTO " : "INSERT INTO ", replace ? 13 : 12) != 0 ||
      mocdc_buf_add(tmp, c->table, c->table_len) != 0 || mocdc_buf_addlit(tmp, " (") != 0)
    return -1;
  int firstcol = 1;
  for (int col = 0; col < b->ncols; col++) {
    if (c->skip && c->skip[col]) continue;
    if (!firstcol && mocdc_buf_addlit(tmp, ",") != 0) return -1;
    firstcol = 0;
    if (put_ident(tmp, b->names[col]) != 0) return -1;
  }
  if (mocdc_buf_addlit(tmp, ") VALUES ") != 0) return -1;
  lua_pushlstring(c->L, tmp->p, tmp->len);
  /* suffix */
  tmp->len = 0;
  if (c->mode == MODE_UPSERT && c->nkey) {
    if (mocdc_buf_addlit(tmp, " ON DUPLICATE KEY UPDATE ") != 0) return -1;
    int first = 1;
    for (int col = 0; col < b->ncols; col++) {
      int is_key = 0;
      for (int k = 0; k < c->nkey; k++) is_key |= c->key[k] == col;
      if (is_key || (c->skip && c->skip[col])) continue;
      if (!first && mocdc_buf_addlit(tmp, ",") != 0) return -1;
      first = 0;
      if (put_ident(tmp, b->names[col]) != 0 || mocdc_buf_addlit(tmp, "=VALUES(") != 0 ||
          put_ident(tmp, b->names[col]) != 0 || mocdc_buf_addlit(tmp, ")") != 0)
        return -1;
    }
    if (first) { /* every column is a key column: nothing to update */
      const char *k0 = b->names[c->key[0]];
      if (put_ident(tmp, k0) != 0 || mocdc_buf_addlit(tmp, "=") != 0 || put_ident(tmp, k0) != 0)
        return -1;
    }
  }
  lua_pushlstring(c->L, tmp->p, tmp->len);
  run r = {0};
  r.prefix = lua_tolstring(c->L, -2, &r.prefix_len);
  r.suffix = lua_tolstring(c->L, -1, &r.suffix_len);
  r.sep = ",", r.sep_len = 1;
  int started = 0;
  for (size_t i = 0; i < nslots; i++) {
    slot *s = &sc->slots[i];
    int copies = c->nkey ? (s->state == ST_UPSERT) : (s->net > 0 ? s->net : 0);
    for (int n = 0; n < copies; n++) {
      (*nups)++;
      if (!started) {
        if (run_start(c, &r) != 0) { rc = -1; goto out; }
        started = 1;
      }
      if (run_begin_item(c, &r) != 0 || put_tuple(c, s->img) != 0) { rc = -1; goto out; }
      if ((rc = run_commit_item(c, &r, s->img)) != 0) goto out;
    }
  }
  rc = started ? run_finish(c, &r) : 0;
out:
  if (rc == -2) {
    lua_replace(c->L, -3); /* message over the prefix */
    lua_pop(c->L, 1);
  } else {
    lua_pop(c->L, 2);
  }
  return rc;
}

static int opt_choice(lua_State *L, int idx, const char *field, const char *def,
                      const char *const list[]) {
  lua_getfield(L, idx, field);
  const char *s = lua_isnil(L, -1) ? def : lua_tostring(L, -1);
  if (!s || lua_type(L, -1) == LUA_TNUMBER) s = "";
  for (int i = 0; list[i]; i++)
    if (strcmp(s, list[i]) == 0) {
      lua_pop(L, 1);
      return i;
    }
  return luaL_argerror(L, idx, lua_pushfstring(L, "invalid %s '%s'", field, s));
}

/* build(batch, opts) */
static int l_build(lua_State *L) {
  static const char *const modes[] = {"replace", "insert", "upsert", NULL};
  static const char *const dialects[] = {"mysql", "matrixone", NULL};
  scratch *sc = lua_touserdata(L, lua_upvalueindex(1));
  mocdc_batch *b = mocdc_batch_check(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  ctx c = {0};
  c.L = L;
  c.sc = sc;
  c.b = b;
  lua_getfield(L, 2, "table");
  if (lua_type(L, -1) != LUA_TSTRING) luaL_argerror(L, 2, "opts.table must be a string");
  c.table = lua_tolstring(L, -1, &c.table_len); /* stays on the stack */
  c.mode = opt_choice(L, 2, "mode", "replace", modes);
  c.dialect = opt_choice(L, 2, "dialect", "mysql", dialects);
  lua_getfield(L, 2, "max_len");
  if (lua_isnil(L, -1)) c.max_len = DEFAULT_MAX_LEN;
  else if (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) >= 1)
    c.max_len = lua_tonumber(L, -1) < 1e12 ? (size_t)lua_tonumber(L, -1) : (size_t)1e12;
  else luaL_argerror(L, 2, "opts.max_len must be a positive number");
  lua_pop(L, 1);
  lua_getfield(L, 2, "key");
  if (!lua_isnil(L, -1)) {
    if (!lua_istable(L, -1)) luaL_argerror(L, 2, "opts.key must be an array of column indexes");
    int n = (int)lua_objlen(L, -1);
    if (grow((void **)&sc->keys, &sc->cap_keys, (size_t)(n > b->ncols ? n : b->ncols) + 1, sizeof *sc->keys) != 0)
      return luaL_error(L, "out of memory");
    for (int i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, i);
      lua_Number x = lua_tonumber(L, -1);
      if (lua_type(L, -1) != LUA_TNUMBER || x != (int)x || x < 1 || x > b->ncols)
        luaL_argerror(L, 2, lua_pushfstring(L, "opts.key[%d] is not a column index (1..%d)", i, b->ncols));
      sc->keys[i - 1] = (int)x - 1;
      lua_pop(L, 1);
    }
    c.nkey = n;
  }
  lua_pop(L, 1);
  lua_getfield(L, 2, "skip");
  if (!lua_isnil(L, -1)) {
    if (!lua_istable(L, -1)) luaL_argerror(L, 2, "opts.skip must be an array of column indexes");
    if (grow((void **)&sc->skip, &sc->cap_skip, (size_t)b->ncols + 1, 1) != 0) return luaL_error(L, "out of memory");
    memset(sc->skip, 0, (size_t)b->ncols + 1);
    int n = (int)lua_objlen(L, -1);
    for (int i = 1; i <= n; i++) {
      lua_rawgeti(L, -1, i);
      lua_Number x = lua_tonumber(L, -1);
      if (lua_type(L, -1) != LUA_TNUMBER || x != (int)x || x < 1 || x > b->ncols)
        luaL_argerror(L, 2, lua_pushfstring(L, "opts.skip[%d] is not a column index (1..%d)", i, b->ncols));
      sc->skip[(int)x - 1] = 1;
      lua_pop(L, 1);
    }
    for (int k = 0; k < c.nkey; k++)
      if (sc->skip[sc->keys[k]]) luaL_argerror(L, 2, "opts.skip holds a key column");
    if (n > 0) c.skip = sc->skip;
  }
  lua_pop(L, 1);
  c.nhkey = c.nkey;
  if (!c.nkey) {
    if (grow((void **)&sc->keys, &sc->cap_keys, (size_t)b->ncols + 1, sizeof *sc->keys) != 0)
      return luaL_error(L, "out of memory");
    for (int i = 0; i < b->ncols; i++)
      if (!c.skip || !c.skip[i]) sc->keys[c.nhkey++] = i;
    if (c.nhkey == 0) luaL_argerror(L, 2, "opts.skip leaves no column to write");
  }
  c.key = c.hkey = sc->keys;

  lua_createtable(L, 4, 0);
  c.out_idx = lua_gettop(L);
  size_t nslots;
  lua_Integer ndel = 0, nups = 0;
  int rc = collapse(&c, &nslots);
  if (rc == 0) rc = build_deletes(&c, nslots, &ndel);
  if (rc == 0) rc = build_upserts(&c, nslots, &nups);
  /* keep scratch bounded: a huge one-off batch must not pin its memory */
  if (sc->sql.cap > 4 * c.max_len + (1 << 20)) mocdc_buf_free(&sc->sql);
  if (sc->tmp.cap > 4 * c.max_len + (1 << 20)) mocdc_buf_free(&sc->tmp);
  if (sc->cap_slots > (1 << 20)) {
    free(sc->slots);
    free(sc->tab);
    sc->slots = NULL;
    sc->tab = NULL;
    sc->cap_slots = sc->cap_tab = 0;
  }
  if (rc == -1) return luaL_error(L, "out of memory building SQL");
  if (rc == -2) {
    lua_pushnil(L);
    lua_insert(L, -2);
    return 2;
  }
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, ndel);
  lua_setfield(L, -2, "deletes");
  lua_pushinteger(L, nups);
  lua_setfield(L, -2, "upserts");
  return 2;
}

static int l_quote_ident(lua_State *L) {
  const char *s = luaL_checkstring(L, 1);
  scratch *sc = lua_touserdata(L, lua_upvalueindex(1));
  sc->tmp.len = 0;
  if (put_ident(&sc->tmp, s) != 0) return luaL_error(L, "out of memory");
  lua_pushlstring(L, sc->tmp.p, sc->tmp.len);
  return 1;
}

static int l_quote_value(lua_State *L) {
  static const char *const classes[] = {"num", "str", "bin", "bit", NULL};
  int cls = luaL_checkoption(L, 1, NULL, classes);
  scratch *sc = lua_touserdata(L, lua_upvalueindex(1));
  size_t len = 0;
  const char *v = NULL;
  if (lua_type(L, 2) == LUA_TSTRING || lua_type(L, 2) == LUA_TNUMBER) v = lua_tolstring(L, 2, &len);
  else if (!(lua_isnoneornil(L, 2) || (lua_islightuserdata(L, 2) && !lua_touserdata(L, 2))))
    luaL_argerror(L, 2, "string, number, nil or NULL expected");
  sc->tmp.len = 0;
  if (put_val(&sc->tmp, cls, v, len) != 0) return luaL_error(L, "out of memory");
  lua_pushlstring(L, sc->tmp.p, sc->tmp.len);
  return 1;
}

static int scratch_gc(lua_State *L) {
  scratch *sc = luaL_checkudata(L, 1, SCRATCH_MT);
  mocdc_buf_free(&sc->sql);
  mocdc_buf_free(&sc->tmp);
  free(sc->slots);
  free(sc->tab);
  free(sc->keys);
  free(sc->skip);
  memset(sc, 0, sizeof *sc);
  return 0;
}

int luaopen_mocdc_sqlbuild_lib(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"build", l_build}, {"quote_ident", l_quote_ident}, {"quote_value", l_quote_value}, {NULL, NULL}};
  init_tables();
  lua_newtable(L);
  scratch *sc = lua_newuserdata(L, sizeof *sc); /* shared by the functions below */
  memset(sc, 0, sizeof *sc);
  if (luaL_newmetatable(L, SCRATCH_MT)) {
    lua_pushcfunction(L, scratch_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  for (const luaL_Reg *f = fns; f->name; f++) {
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, f->func, 1);
    lua_setfield(L, -3, f->name);
  }
  lua_pop(L, 1);
  return 1;
}
