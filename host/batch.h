/* mocdc batch: the native container of typed rows that flows from source to sink.
 *
 * A batch holds rows of one table (one column list). Each row has an op
 * (insert/update/delete) and up to two images: `before` (update/delete) and
 * `after` (insert/update). A value is a byte string in MySQL text-protocol form
 * (what mysql_fetch_row returns: "123", "2024-01-15 14:30:00", raw bytes for
 * BLOB/BINARY/BIT) or SQL NULL. The column class tells the SQL builder and the
 * LOAD DATA writer how to quote it. All bytes live in one arena owned by the
 * batch; mocdc_batch_clear() keeps the memory for reuse (no per-row malloc).
 *
 * Lua sees a batch as userdata "mocdc.batch" (host/batch.c); rows become Lua
 * tables only through batch:get()/batch:get_named() (used by transforms). */
#ifndef MOCDC_BATCH_H
#define MOCDC_BATCH_H
#include <stddef.h>
#include <stdint.h>
#include <lua.h>

enum mocdc_op { MOCDC_INSERT = 1, MOCDC_UPDATE = 2, MOCDC_DELETE = 3 };

/* How a value is written into SQL. */
enum mocdc_class {
  MOCDC_NUM = 0, /* integers, DECIMAL, FLOAT, DOUBLE, YEAR: written bare */
  MOCDC_STR = 1, /* CHAR/VARCHAR/TEXT/ENUM/SET/JSON/DATE/TIME/DATETIME/TIMESTAMP: '...' escaped */
  MOCDC_BIN = 2, /* BINARY/VARBINARY/BLOB/GEOMETRY: X'hex' */
  MOCDC_BIT = 3  /* BIT(n): raw big-endian bytes, written as b'0101..' */
};

#define MOCDC_NULL_LEN UINT32_MAX

typedef struct { uint32_t off, len; } mocdc_val;      /* len == MOCDC_NULL_LEN: NULL */
typedef struct { uint8_t op; uint32_t before, after; int64_t ts; } mocdc_row;
#define MOCDC_NO_IMAGE UINT32_MAX                      /* row has no such image */

typedef struct mocdc_batch {
  int ncols;
  char **names;          /* column names (owned) */
  uint8_t *cls;          /* enum mocdc_class per column */
  mocdc_row *rows; size_t nrows, cap_rows;
  mocdc_val *vals; size_t nvals, cap_vals;     /* images: ncols values each */
  char *data; size_t dlen, dcap;               /* value bytes arena */
} mocdc_batch;

mocdc_batch *mocdc_batch_new(int ncols);     /* NULL on OOM */
int mocdc_batch_set_column(mocdc_batch *b, int i, const char *name, int cls);
void mocdc_batch_clear(mocdc_batch *b);      /* keep capacity */
void mocdc_batch_free(mocdc_batch *b);       /* NULL-safe */

/* Append a row. `before`/`after`: arrays of ncols pointers (NULL pointer = SQL
 * NULL) with lengths; pass before=NULL / after=NULL when the image is absent.
 * Returns 0, or -1 on OOM. */
int mocdc_batch_add(mocdc_batch *b, int op, int64_t ts,
                    const char *const *before, const unsigned long *before_len,
                    const char *const *after, const unsigned long *after_len);

/* Append a row of one image: columns map[0..ncols-1] (0-based) of a wider
 * source row v/len (a cursor row). insert: the image is `after`; delete:
 * `before`; update: the one image is both (stored once, shared). Returns 0,
 * or -1 on OOM / a value of 4 GiB or more. */
int mocdc_batch_add_projected(mocdc_batch *b, int op, int64_t ts, const char *const *v,
                              const unsigned long *len, const int *map);

/* Value access; returns NULL for SQL NULL (and *len = 0). */
static inline const char *mocdc_batch_val(const mocdc_batch *b, uint32_t image, int col, size_t *len) {
  const mocdc_val *v = &b->vals[(size_t)image + (size_t)col];
  if (v->len == MOCDC_NULL_LEN) { *len = 0; return NULL; }
  *len = v->len; return b->data + v->off;
}
size_t mocdc_batch_bytes(const mocdc_batch *b);

/* Lua side: push a new userdata owning `b` (metatable "mocdc.batch"); check one. */
void mocdc_batch_push(lua_State *L, mocdc_batch *b);
mocdc_batch *mocdc_batch_check(lua_State *L, int idx);

/* Growable byte buffer shared by the SQL builder and the LOAD DATA writer. */
typedef struct { char *p; size_t len, cap; } mocdc_buf;
int mocdc_buf_reserve(mocdc_buf *s, size_t extra);   /* 0 or -1 on OOM */
int mocdc_buf_add(mocdc_buf *s, const void *p, size_t n);
#define mocdc_buf_addlit(s, lit) mocdc_buf_add((s), (lit), sizeof(lit) - 1)
void mocdc_buf_free(mocdc_buf *s);

#endif
