/* mocdc.binlog.lib, private: what the binlog files share (host/README.md, "mocdc.binlog.lib").
 *
 *   binlog.c           the Lua binding: stream methods, next() (the event loop), set_schema, close
 *   binlog_open.c      binlog.open{}: connect, check the source's settings, pick the start, COM_BINLOG_DUMP
 *   binlog_events.c    reading events off the stream, one handler per event type, process()
 *   binlog_tablemap.c  TABLE_MAP events: the name and table-map caches, merging set_schema()
 *   binlog_rows.c      rows events decoded into a mocdc_batch
 *   binlog_values.c    one column value of each MySQL type in text-protocol form
 *   binlog_format.c    the text forms of FLOAT/DOUBLE, DECIMAL and the temporal types
 *   binlog_charset.c   text in other charsets converted to utf8mb4
 *
 * Formats: MariaDB/MySQL source sql/log_event*.cc, sql/rpl_utility.cc,
 * strings/decimal.c, sql-common/my_time.c; cross-checked against
 * `mariadb-binlog --base64-output=decode-rows -vv` and SELECT. */
#ifndef MOCDC_BINLOG_INTERNAL_H
#define MOCDC_BINLOG_INTERNAL_H
#include <iconv.h>
#include <stddef.h>
#include <stdint.h>
#include <mysql.h>
#include <mariadb_rpl.h>
#include "batch.h"
#include "mocdc.h"

/* -rdynamic exports every global symbol of the binary; these are the binlog module's own */
#pragma GCC visibility push(hidden)

#define BINLOG_MT "mocdc.binlog"
#define HDR_LEN 19               /* v4 common event header */
#define ERRLEN 2048
#define NAME_BUCKETS 1024
#define MAP_BUCKETS 256
#define MAP_LIMIT 1024           /* table-map cache size before a clear at a transaction start */
#define DEFAULT_MAX_BYTES (64u << 20)

/* Column types that only exist in the binlog or MariaDB (mysql.h may lack them). */
#define T_VARCHAR_COMPRESSED 140
#define T_BLOB_COMPRESSED 141
#define T_JSON 245

#define GRANT_HINT "(on MariaDB: GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO ...; on MySQL: " \
                   "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO ...)"

/* ------------------------------------------------------------------------- */
/* byte readers                                                              */

static inline uint32_t le16(const uint8_t *p) { return (uint32_t)p[0] | ((uint32_t)p[1] << 8); }
static inline uint32_t le24(const uint8_t *p) { return le16(p) | ((uint32_t)p[2] << 16); }
static inline uint32_t le32(const uint8_t *p) { return le24(p) | ((uint32_t)p[3] << 24); }
static inline uint64_t le48(const uint8_t *p) { return le32(p) | ((uint64_t)le16(p + 4) << 32); }
static inline uint64_t le64(const uint8_t *p) { return le32(p) | ((uint64_t)le32(p + 4) << 32); }
static inline uint64_t be_n(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; i++) v = (v << 8) | p[i];
  return v;
}

/* length-encoded integer (net_field_length); -1 when truncated or NULL marker */
static inline int rd_packed(const uint8_t **pp, const uint8_t *end, uint64_t *out) {
  const uint8_t *p = *pp;
  if (p >= end) return -1;
  uint8_t c = *p;
  if (c < 251) { *out = c; *pp = p + 1; return 0; }
  if (c == 252 && end - p >= 3) { *out = le16(p + 1); *pp = p + 3; return 0; }
  if (c == 253 && end - p >= 4) { *out = le24(p + 1); *pp = p + 4; return 0; }
  if (c == 254 && end - p >= 9) { *out = le64(p + 1); *pp = p + 9; return 0; }
  return -1;
}

/* ------------------------------------------------------------------------- */
/* integers as text (binlog_values.c and binlog_format.c)                    */

static inline size_t fmt_u64(char *dst, uint64_t v) {
  char tmp[24];
  int n = 0;
  do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
  for (int i = 0; i < n; i++) dst[i] = tmp[n - 1 - i];
  return (size_t)n;
}

static inline size_t fmt_i64(char *dst, int64_t v) {
  if (v < 0) {
    dst[0] = '-';
    return 1 + fmt_u64(dst + 1, (uint64_t)0 - (uint64_t)v);
  }
  return fmt_u64(dst, (uint64_t)v);
}

/* exactly n digits of v (zero padded), v < 10^n */
static inline void fmt_pad(char *dst, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; i--) { dst[i] = (char)('0' + v % 10); v /= 10; }
}

/* ------------------------------------------------------------------------- */
/* types                                                                     */

enum { CONV_LATIN1 = 1, CONV_ICONV = 2 };
typedef struct { char name[32]; int kind; iconv_t cd; } conv;   /* a charset -> utf8mb4 converter */
#define MAX_CONVS 32

typedef struct { int n; char **s; size_t *l; } strlist;

/* One column as given by stream:set_schema(). */
typedef struct {
  char *name;
  int8_t uns;       /* 1 unsigned */
  int8_t cls;       /* enum mocdc_class, -1 not given */
  int16_t decimals; /* FLOAT(M,D)/DOUBLE(M,D): fixed decimals, -1 none */
  uint16_t zerofill;/* ZEROFILL display width, 0 none */
  char *charset;    /* character set name, NULL not given */
  strlist ev, sv;   /* ENUM / SET values (utf8mb4, from information_schema) */
} colspec;

/* A (db, table) name: the want() decision and the set_schema() columns. */
typedef struct tname {
  char *db, *tbl;
  uint32_t hash;
  int8_t want;      /* -1 undecided (treated as wanted), 0, 1 */
  uint8_t announced;
  int nspec;
  colspec *spec;    /* NULL: no set_schema */
  uint32_t gen;     /* bumped by set_schema */
  uint32_t spec_sig;/* column types the schema was first used with (0: not yet) */
  struct tname *next;
} tname;

/* A decoded column: what the row decoder needs. */
typedef struct {
  uint8_t type;      /* binlog type; ENUM/SET wrapped in STRING are unwrapped */
  uint8_t cls;
  uint8_t uns;
  uint8_t binary;
  uint16_t meta;     /* as read from the table map */
  uint32_t maxlen;   /* CHAR/BINARY byte length; ENUM/SET pack length */
  int16_t decimals;
  uint16_t zerofill;
  const strlist *vals;  /* ENUM/SET values */
  const conv *cv;       /* text to convert to utf8mb4, or NULL */
  const char *name;
} bcol;

/* A TABLE_MAP event, kept per table id. */
typedef struct tmap {
  uint64_t id;
  tname *nm;
  int ncols;
  uint8_t *types;    /* raw column types */
  uint16_t *meta;
  char **names;      /* COLUMN_NAME metadata, or NULL */
  int8_t *sign;      /* 1 unsigned, 0 signed, -1 not given */
  int8_t *bin;       /* 1 binary charset, 0 not, -1 not given */
  uint16_t *cs;      /* collation id from the metadata, 0 not given */
  strlist *lists;    /* ENUM/SET values per column (n == 0: not given) */
  strlist *ulists;   /* the same converted to utf8mb4 (when the charset needs it) */
  uint8_t has_names;
  uint32_t sig;      /* hash of the column types and metadata */
  uint8_t *raw;      /* event body, to recognise an identical re-map */
  size_t rawlen;
  bcol *cols;        /* resolved columns */
  int resolved;
  uint32_t resolved_gen;
  struct tmap *next;
} tmap;

/* value reference while a row is decoded: into the event, into scratch, or NULL */
typedef struct { const char *p; size_t len; long soff; } vref;

/* the rows event being decoded (kept across next() calls when a batch fills up) */
typedef struct {
  int active;
  tmap *t;
  int op;
  const uint8_t *p, *end;
} rowscur;

/* One binlog stream (the userdata "mocdc.binlog"). */
typedef struct {
  MYSQL *my;
  MARIADB_RPL *rpl;
  MARIADB_RPL_EVENT *ev;
  int ev_pending;              /* ev holds an event not consumed yet */
  const uint8_t *h;            /* header of the current event */
  uint32_t evlen;
  rowscur rc;
  char file[256];
  uint64_t pos;
  int crc;                     /* 4 when events carry a CRC32, else 0 */
  uint8_t post_hdr[256];       /* from FORMAT_DESCRIPTION; 0 = unknown */
  int blocking, eof;
  int mariadb;                 /* source is MariaDB (not MySQL) */
  char host[256];
  char where[300];       /* host:port or the unix socket, in messages */
  char user[256];
  unsigned port;
  uint32_t server_id;
  char *deferred;              /* error to return after the pending batch */
  int deferred_errno;
  int interrupted;             /* a read failed after SIGINT/SIGTERM: the stream ends at s->pos */
  tname *names[NAME_BUCKETS];
  tmap *maps[MAP_BUCKETS];
  int nmaps;
  tname *need_sent;            /* need_schema returned for this name */
  /* accumulation */
  mocdc_batch *acc;
  tmap *acc_t;
  uint64_t acc_pos;
  uint32_t acc_ts;
  int acc_more;
  /* scratch */
  mocdc_buf scratch, ubuf;
  vref *vr;
  const char **vp;
  unsigned long *vl;
  int vcap;
  conv convs[MAX_CONVS];
  int nconvs;
  /* info */
  char server_version[64];
  char row_metadata[32];
  uint64_t n_events, n_rows;
  char err[ERRLEN];
} stream;

/* ------------------------------------------------------------------------- */
/* building event tables on the Lua stack                                    */

static inline void set_str(lua_State *L, const char *k, const char *v, size_t n) {
  lua_pushlstring(L, v, n);
  lua_setfield(L, -2, k);
}
static inline void set_num(lua_State *L, const char *k, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}
static inline void new_event(lua_State *L, const char *type, int extra) {
  lua_createtable(L, 0, extra + 1);
  lua_pushstring(L, type);
  lua_setfield(L, -2, "type");
}
static inline void set_filepos(lua_State *L, stream *s) {
  lua_pushstring(L, s->file);
  lua_setfield(L, -2, "file");
  set_num(L, "pos", (double)s->pos);
}

/* ------------------------------------------------------------------------- */
/* binlog.c, binlog_open.c                                                   */

void bl_stream_close(stream *s);                 /* frees everything; idempotent */
int bl_open(lua_State *L);                       /* binlog.open{...} */

/* ------------------------------------------------------------------------- */
/* binlog_events.c: the events. The handlers, process() and what it calls   */
/* return >0 results pushed, 0 continue (event consumed), -1 error (s->err). */

int bl_fetch(stream *s);                         /* 1 event, 0 EOF (non-blocking), -1 error */
void bl_fetch_error(stream *s, unsigned err, const char *msg);   /* s->err: one clear message */
int bl_process(lua_State *L, stream *s, size_t max_rows, size_t max_bytes);
void bl_consume(stream *s);                      /* current event done: advance the position */
void bl_body_of(stream *s, const uint8_t **b, const uint8_t **e);  /* body without header, CRC */
int bl_corrupt(stream *s);                       /* "corrupt binlog event (type N) at f:p", -1 */
int bl_uncompress(const uint8_t *src, size_t n, mocdc_buf *out, char *err);  /* MariaDB zlib body */

/* ------------------------------------------------------------------------- */
/* binlog_tablemap.c                                                         */

tname *bl_name_get(stream *s, const char *db, size_t dl, const char *tb, size_t tl, int create);
tmap *bl_map_find(stream *s, uint64_t id);
void bl_maps_clear(stream *s);
void bl_names_clear(stream *s);
int bl_tmap_resolve(stream *s, tmap *t);         /* 0 ok, 1 need_schema, -1 error */
int bl_ev_table_map(lua_State *L, stream *s);
void bl_strlist_free(strlist *sl);
void bl_spec_free(colspec *spec, int n);

/* ------------------------------------------------------------------------- */
/* binlog_rows.c                                                             */

int bl_ev_rows(lua_State *L, stream *s, int type, size_t max_rows, size_t max_bytes);
int bl_have_rows(stream *s);                     /* rows waiting (an empty batch is dropped) */
int bl_push_rows(lua_State *L, stream *s);       /* the batch as a "rows" event */

/* ------------------------------------------------------------------------- */
/* binlog_values.c                                                           */

enum { DEC_OK = 0, DEC_TRUNC = -1, DEC_UNSUPPORTED = -2 };
void bl_col_setup(bcol *c, uint8_t type, uint16_t meta);
int bl_type_class(const bcol *c);
const char *bl_type_name(uint8_t t);
long bl_decode_value(const bcol *c, const uint8_t *p, const uint8_t *end, mocdc_buf *sb, vref *v);

/* ------------------------------------------------------------------------- */
/* binlog_format.c                                                           */

size_t bl_fmt_real(double x, int is_float, char *to);
int bl_decimal_size(int prec, int scale);
size_t bl_fmt_decimal(const uint8_t *src, int prec, int scale, char *out);
size_t bl_fmt_ymd_hms(char *o, unsigned y, unsigned mo, unsigned d, unsigned h, unsigned mi, unsigned s);
size_t bl_fmt_hms(char *o, int neg, unsigned h, unsigned mi, unsigned s);
uint32_t bl_read_frac(const uint8_t *p, int fsp);
size_t bl_fmt_time2(const uint8_t *p, int fsp, char *o);
size_t bl_fmt_datetime2(const uint8_t *p, int fsp, char *o);
size_t bl_fmt_timestamp(uint32_t sec, uint32_t usec, int fsp, char *o);

/* ------------------------------------------------------------------------- */
/* binlog_charset.c                                                          */

int bl_charset_is_utf8(const char *cs);
int bl_conv_run(const conv *cv, const char *in, size_t n, mocdc_buf *sb, size_t *outlen);
const conv *bl_conv_get(stream *s, const char *csname, const char *enc);
int bl_convert_list(const conv *cv, const strlist *in, strlist *out);
void bl_convs_close(stream *s);

#pragma GCC visibility pop
#endif
