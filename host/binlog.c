/* mocdc.binlog.lib: a MariaDB/MySQL row-based binlog stream.
 *
 * libmariadb's replication API (mariadb_rpl_open/fetch) is used only for the
 * COM_BINLOG_DUMP stream and the event framing. Every event body is parsed
 * here from the raw packet: the library misparses ROTATE and decodes several
 * column types wrongly (spec/PEERS.md, "Probed on our platform"). Row images
 * are decoded straight into a mocdc_batch in MySQL text-protocol form, so a
 * binlog row and a SELECT of the same row are byte-identical.
 *
 * stream:next() returns one event as a Lua table. Consecutive rows events of
 * one table are appended into one batch (up to max_rows / max_bytes), so Lua
 * is crossed once per batch, never per row. Memory is bounded by one batch
 * plus one event, whatever the size of a transaction.
 *
 * Formats: MariaDB/MySQL source sql/log_event*.cc, sql/rpl_utility.cc,
 * strings/decimal.c, sql-common/my_time.c; cross-checked against
 * `mariadb-binlog --base64-output=decode-rows -vv` and SELECT. */
#include <dlfcn.h>
#include <errno.h>
#include <float.h>
#include <iconv.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <mysql.h>
#include <mariadb_rpl.h>
#include <ma_pvio.h>
#include "batch.h"
#include "connopts.h"
#include "mocdc.h"

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
static int rd_packed(const uint8_t **pp, const uint8_t *end, uint64_t *out) {
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
/* zlib (compressed events), loaded on first use: libmariadb already links it */

typedef int (*uncompress_fn)(unsigned char *, unsigned long *, const unsigned char *, unsigned long);

static uncompress_fn zlib_uncompress(void) {
  static uncompress_fn fn;
  static int tried;
  if (!tried) {
    tried = 1;
    void *h = dlopen("libz.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) h = dlopen("libz.so", RTLD_NOW | RTLD_LOCAL);
    if (h) {
      void *sym = dlsym(h, "uncompress");
      memcpy(&fn, &sym, sizeof fn);
    }
  }
  return fn;
}

/* MariaDB binlog_buf_uncompress(): header byte 0x80|lenlen, big-endian length, zlib data. */
static int mariadb_uncompress(const uint8_t *src, size_t n, mocdc_buf *out, char *err) {
  if (n < 1 || (src[0] & 0x07) == 0 || (size_t)(src[0] & 0x07) + 1 > n || (src[0] & 0x07) > 4) {
    snprintf(err, ERRLEN, "corrupt compressed binlog event (bad header)");
    return -1;
  }
  int lenlen = src[0] & 0x07;
  unsigned long want = (unsigned long)be_n(src + 1, lenlen);
  uncompress_fn fn = zlib_uncompress();
  if (!fn) {
    snprintf(err, ERRLEN, "compressed binlog events need zlib (libz.so.1), which could not be loaded");
    return -1;
  }
  out->len = 0;
  if (mocdc_buf_reserve(out, want + 1) != 0) {
    snprintf(err, ERRLEN, "out of memory uncompressing a binlog event (%lu bytes)", want);
    return -1;
  }
  unsigned long got = want;
  int rc = fn((unsigned char *)out->p, &got, src + 1 + lenlen, (unsigned long)(n - 1 - lenlen));
  if (rc != 0 || got != want) {
    snprintf(err, ERRLEN, "corrupt compressed binlog event (zlib error %d)", rc);
    return -1;
  }
  out->len = got;
  return 0;
}

/* ------------------------------------------------------------------------- */
/* character sets: text columns are handed out in utf8mb4, as a utf8mb4      */
/* connection SELECTs them (the binlog holds them in the column's charset)   */

enum { CONV_LATIN1 = 1, CONV_ICONV = 2 };
typedef struct { char name[32]; int kind; iconv_t cd; } conv;
#define MAX_CONVS 32

/* MariaDB's latin1 is Windows-1252; its 5 holes map to the C1 code points */
static const uint16_t cp1252_80[32] = {
    0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178};

static size_t put_utf8(char *o, uint32_t u) {
  if (u < 0x80) { o[0] = (char)u; return 1; }
  if (u < 0x800) { o[0] = (char)(0xC0 | (u >> 6)); o[1] = (char)(0x80 | (u & 0x3F)); return 2; }
  o[0] = (char)(0xE0 | (u >> 12));
  o[1] = (char)(0x80 | ((u >> 6) & 0x3F));
  o[2] = (char)(0x80 | (u & 0x3F));
  return 3;
}

/* Does a charset need converting to utf8mb4? */
static int charset_is_utf8(const char *cs) {
  return !cs || !*cs || strcmp(cs, "utf8mb4") == 0 || strcmp(cs, "utf8mb3") == 0 || strcmp(cs, "utf8") == 0 ||
         strcmp(cs, "ascii") == 0 || strcmp(cs, "binary") == 0;
}

/* Convert n bytes of text to UTF-8 at the end of sb; *outlen = bytes written.
 * Bytes the charset cannot map become '?', as the server writes them. */
static int conv_run(const conv *cv, const char *in, size_t n, mocdc_buf *sb, size_t *outlen) {
  if (mocdc_buf_reserve(sb, n * 4 + 16) != 0) return -1;
  char *o = sb->p + sb->len, *o0 = o;
  if (cv->kind == CONV_LATIN1) {
    for (size_t i = 0; i < n; i++) {
      uint8_t c = (uint8_t)in[i];
      if (c < 0x80) *o++ = (char)c;
      else o += put_utf8(o, c < 0xA0 ? cp1252_80[c - 0x80] : c);
    }
  } else {
    iconv(cv->cd, NULL, NULL, NULL, NULL);
    char *ip = (char *)in;
    size_t il = n, ol = n * 4 + 16;
    while (il > 0) {
      if (iconv(cv->cd, &ip, &il, &o, &ol) != (size_t)-1) break;
      if (errno == E2BIG) return -1;
      *o++ = '?';                    /* EILSEQ / EINVAL: skip one byte */
      ol--;
      ip++;
      il--;
      iconv(cv->cd, NULL, NULL, NULL, NULL);
    }
  }
  *outlen = (size_t)(o - o0);
  return 0;
}

/* iconv names for libmariadb's encoding names where glibc differs */
static const char *iconv_name(const char *csname, const char *enc) {
  static const char *const map[][2] = {
      {"utf16", "UTF-16BE"}, {"utf16le", "UTF-16LE"}, {"utf32", "UTF-32BE"}, {"ucs2", "UCS-2BE"},
      {"koi8r", "KOI8-R"}, {"koi8u", "KOI8-U"}, {"eucjpms", "EUC-JP-MS"}, {"ujis", "EUC-JP"},
      {"euckr", "EUC-KR"}, {"latin5", "ISO-8859-9"}, {"latin7", "ISO-8859-13"}, {"greek", "ISO-8859-7"},
      {"hebrew", "ISO-8859-8"}, {"tis620", "TIS-620"}, {"macroman", "MACINTOSH"}, {"cp932", "CP932"},
      {"sjis", "SJIS"}, {"gb18030", "GB18030"}, {NULL, NULL}};
  for (int i = 0; map[i][0]; i++)
    if (strcmp(csname, map[i][0]) == 0) return map[i][1];
  return enc && *enc ? enc : csname;
}

/* ------------------------------------------------------------------------- */
/* schemas                                                                   */

typedef struct { int n; char **s; size_t *l; } strlist;

static void strlist_free(strlist *sl) {
  if (!sl) return;
  for (int i = 0; i < sl->n; i++) free(sl->s[i]);
  free(sl->s);
  free(sl->l);
  sl->n = 0; sl->s = NULL; sl->l = NULL;
}

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

static void spec_free(colspec *spec, int n) {
  if (!spec) return;
  for (int i = 0; i < n; i++) {
    free(spec[i].name);
    free(spec[i].charset);
    strlist_free(&spec[i].ev);
    strlist_free(&spec[i].sv);
  }
  free(spec);
}

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

static void tmap_clear(tmap *t) {
  if (!t) return;
  if (t->names)
    for (int i = 0; i < t->ncols; i++) free(t->names[i]);
  if (t->lists)
    for (int i = 0; i < t->ncols; i++) strlist_free(&t->lists[i]);
  if (t->ulists)
    for (int i = 0; i < t->ncols; i++) strlist_free(&t->ulists[i]);
  free(t->names); free(t->sign); free(t->bin); free(t->lists); free(t->ulists); free(t->cs);
  free(t->types); free(t->meta); free(t->raw); free(t->cols);
  t->names = NULL; t->sign = NULL; t->bin = NULL; t->lists = NULL; t->ulists = NULL; t->cs = NULL;
  t->types = NULL; t->meta = NULL; t->raw = NULL; t->cols = NULL;
  t->ncols = 0; t->resolved = 0;
}

/* value reference while a row is decoded: into the event, into scratch, or NULL */
typedef struct { const char *p; size_t len; long soff; } vref;

/* the rows event being decoded (kept across next() calls when a batch fills up) */
typedef struct {
  int active;
  tmap *t;
  int op;
  const uint8_t *p, *end;
} rowscur;

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
/* number formatting                                                         */

static size_t fmt_u64(char *dst, uint64_t v) {
  char tmp[24];
  int n = 0;
  do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
  for (int i = 0; i < n; i++) dst[i] = tmp[n - 1 - i];
  return (size_t)n;
}

static size_t fmt_i64(char *dst, int64_t v) {
  if (v < 0) {
    dst[0] = '-';
    return 1 + fmt_u64(dst + 1, (uint64_t)0 - (uint64_t)v);
  }
  return fmt_u64(dst, (uint64_t)v);
}

/* exactly n digits of v (zero padded), v < 10^n */
static void fmt_pad(char *dst, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; i--) { dst[i] = (char)('0' + v % 10); v /= 10; }
}

/* Digits of x > 0 rounded to ndig significant digits, trailing zeros dropped. */
static int real_digits(double x, int ndig, char *dig, int *decpt) {
  char tmp[64];
  snprintf(tmp, sizeof tmp, "%.*e", ndig - 1, x);
  int n = 0;
  const char *p = tmp;
  for (; *p && *p != 'e'; p++)
    if (*p >= '0' && *p <= '9') dig[n++] = *p;
  *decpt = atoi(p + 1) + 1;
  while (n > 1 && dig[n - 1] == '0') n--;
  return n;
}

/* Shortest digit string that reads back as x (what dtoa mode 0 gives). If any
 * string of <= 15 digits reads back as x it is x correctly rounded to 15 digits
 * (half the spacing of 15-digit decimals exceeds half an ulp), so: 15 digits with
 * trailing zeros dropped, else 16, else 17 (always enough). */
static int real_digits_shortest(double x, char *dig, int *decpt) {
  if (x < DBL_MIN) {             /* subnormal: fewer significant bits, search all lengths */
    int lo = 1, hi = 17;
    while (lo < hi) {
      int mid = (lo + hi) / 2;
      char tmp[64];
      snprintf(tmp, sizeof tmp, "%.*e", mid - 1, x);
      if (strtod(tmp, NULL) == x) hi = mid; else lo = mid + 1;
    }
    return real_digits(x, lo, dig, decpt);
  }
  for (int nd = 15; nd < 17; nd++) {
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%.*e", nd - 1, x);
    if (strtod(tmp, NULL) == x) {
      int n = 0;
      const char *p = tmp;
      for (; *p && *p != 'e'; p++)
        if (*p >= '0' && *p <= '9') dig[n++] = *p;
      *decpt = atoi(p + 1) + 1;
      while (n > 1 && dig[n - 1] == '0') n--;
      return n;
    }
  }
  return real_digits(x, 17, dig, decpt);
}

/* FLOAT/DOUBLE as the server's text protocol writes them: my_gcvt() with the
 * 69-character width of Field_float/Field_double::val_str (FLOAT: 6 significant
 * digits, DOUBLE: shortest round trip; 'e' format past 15 digits of magnitude).
 * Verified against SELECT over 20k random values. */
static size_t fmt_real(double x, int is_float, char *to) {
  int width = 69;
  char dig[40];
  int decpt, len;
  char *dst = to;
  if (x == 0 || x != x) { to[0] = '0'; return 1; }
  int sign = x < 0;
  if (sign) { x = -x; width--; }
  len = is_float ? real_digits(x, FLT_DIG, dig, &decpt) : real_digits_shortest(x, dig, &decpt);
  int exp_len = 1 + (decpt >= 101 || decpt <= -99) + (decpt >= 11 || decpt <= -9);
  int have_space = (decpt <= 0 ? len - decpt + 2 : decpt > 0 && decpt < len ? len + 1 : decpt) <= width;
  int force_e = (decpt <= 0 && width <= 2 - decpt && width >= 3 + exp_len);
  if ((have_space || ((decpt <= width && (decpt >= -1 || (decpt == -2 && (len > 1 || !force_e)))) && !force_e)) &&
      (!have_space || (decpt >= -DBL_DIG + 1 && (decpt <= DBL_DIG || len > decpt)))) {
    if (sign) *dst++ = '-';
    if (decpt <= 0) {
      *dst++ = '0';
      *dst++ = '.';
      for (int k = decpt; k < 0; k++) *dst++ = '0';
    }
    int i;
    for (i = 1; i <= len; i++) {
      *dst++ = dig[i - 1];
      if (i == decpt && i < len) *dst++ = '.';
    }
    while (i++ <= decpt) *dst++ = '0';
  } else {
    int e = decpt - 1;
    if (sign) *dst++ = '-';
    *dst++ = dig[0];
    if (len > 1) {
      *dst++ = '.';
      memcpy(dst, dig + 1, (size_t)len - 1);
      dst += len - 1;
    }
    *dst++ = 'e';
    if (e < 0) { *dst++ = '-'; e = -e; }
    dst += fmt_u64(dst, (uint64_t)e);
  }
  return (size_t)(dst - to);
}

static const int dig2bytes[10] = {0, 1, 1, 2, 2, 3, 3, 4, 4, 4};

static int decimal_size(int prec, int scale) {
  int intg = prec - scale;
  return (intg / 9) * 4 + dig2bytes[intg % 9] + (scale / 9) * 4 + dig2bytes[scale % 9];
}

/* Binary DECIMAL (strings/decimal.c bin2decimal) to text with all `scale` digits. */
static size_t fmt_decimal(const uint8_t *src, int prec, int scale, char *out) {
  uint8_t b[40];
  int size = decimal_size(prec, scale);
  memcpy(b, src, (size_t)size);
  int neg = !(b[0] & 0x80);
  b[0] ^= 0x80;
  if (neg)
    for (int i = 0; i < size; i++) b[i] ^= 0xFF;
  int intg = prec - scale, intg0 = intg / 9, intg0x = intg % 9, frac0 = scale / 9, frac0x = scale % 9;
  char id[80], fd[80];
  int ni = 0, nf = 0;
  const uint8_t *p = b;
  uint64_t v;
  if (intg0x) {
    v = be_n(p, dig2bytes[intg0x]) % 1000000000u; p += dig2bytes[intg0x];
    fmt_pad(id + ni, v, intg0x); ni += intg0x;
  }
  for (int i = 0; i < intg0; i++) {
    v = be_n(p, 4) % 1000000000u; p += 4;
    fmt_pad(id + ni, v, 9); ni += 9;
  }
  for (int i = 0; i < frac0; i++) {
    v = be_n(p, 4) % 1000000000u; p += 4;
    fmt_pad(fd + nf, v, 9); nf += 9;
  }
  if (frac0x) {
    v = be_n(p, dig2bytes[frac0x]) % 1000000000u;
    fmt_pad(fd + nf, v, frac0x); nf += frac0x;
  }
  int k = 0;
  while (k < ni && id[k] == '0') k++;
  int nonzero = k < ni;
  for (int i = 0; i < nf && !nonzero; i++) nonzero = fd[i] != '0';
  char *o = out;
  if (neg && nonzero) *o++ = '-';
  if (k == ni) *o++ = '0';
  else { memcpy(o, id + k, (size_t)(ni - k)); o += ni - k; }
  if (scale > 0) {
    *o++ = '.';
    memcpy(o, fd, (size_t)nf);
    o += nf;
  }
  return (size_t)(o - out);
}

static size_t fmt_frac(char *o, uint32_t usec, int fsp) {
  if (fsp <= 0) return 0;
  static const uint32_t div[7] = {1000000, 100000, 10000, 1000, 100, 10, 1};
  o[0] = '.';
  fmt_pad(o + 1, usec / div[fsp], fsp);
  return (size_t)fsp + 1;
}

static size_t fmt_ymd_hms(char *o, unsigned y, unsigned mo, unsigned d, unsigned h, unsigned mi, unsigned s) {
  fmt_pad(o, y % 10000, 4); o[4] = '-';
  fmt_pad(o + 5, mo % 100, 2); o[7] = '-';
  fmt_pad(o + 8, d % 100, 2); o[10] = ' ';
  fmt_pad(o + 11, h % 100, 2); o[13] = ':';
  fmt_pad(o + 14, mi % 100, 2); o[16] = ':';
  fmt_pad(o + 17, s % 100, 2);
  return 19;
}

static size_t fmt_hms(char *o, int neg, unsigned h, unsigned mi, unsigned s) {
  char *p = o;
  if (neg) *p++ = '-';
  if (h < 100) { fmt_pad(p, h, 2); p += 2; }
  else p += fmt_u64(p, h);
  *p++ = ':';
  fmt_pad(p, mi % 100, 2); p += 2;
  *p++ = ':';
  fmt_pad(p, s % 100, 2); p += 2;
  return (size_t)(p - o);
}

static int frac_bytes(int fsp) { return (fsp + 1) / 2; }

/* fraction of DATETIME2/TIMESTAMP2 in microseconds */
static uint32_t read_frac(const uint8_t *p, int fsp) {
  switch (fsp) {
  case 1: case 2: return (uint32_t)p[0] * 10000;
  case 3: case 4: return (uint32_t)be_n(p, 2) * 100;
  case 5: case 6: return (uint32_t)be_n(p, 3);
  default: return 0;
  }
}

static size_t fmt_time2(const uint8_t *p, int fsp, char *o) {
  int64_t packed;
  int64_t intpart = (int64_t)be_n(p, 3) - 0x800000;
  int64_t frac;
  switch (fsp) {
  case 1: case 2:
    frac = p[3];
    if (intpart < 0 && frac) { intpart++; frac -= 0x100; }
    packed = intpart * 16777216 + frac * 10000;
    break;
  case 3: case 4:
    frac = (int64_t)be_n(p + 3, 2);
    if (intpart < 0 && frac) { intpart++; frac -= 0x10000; }
    packed = intpart * 16777216 + frac * 100;
    break;
  case 5: case 6:
    packed = (int64_t)be_n(p, 6) - INT64_C(0x800000000000);
    break;
  default:
    packed = intpart * 16777216;
  }
  int neg = packed < 0;
  if (neg) packed = -packed;
  int64_t hms = packed >> 24;
  uint32_t usec = (uint32_t)(packed % 16777216);
  size_t n = fmt_hms(o, neg, (unsigned)((hms >> 12) % 1024), (unsigned)((hms >> 6) % 64), (unsigned)(hms % 64));
  return n + fmt_frac(o + n, usec, fsp);
}

static size_t fmt_datetime2(const uint8_t *p, int fsp, char *o) {
  int64_t ymdhms = (int64_t)be_n(p, 5) - INT64_C(0x8000000000);
  if (ymdhms < 0) ymdhms = -ymdhms;
  int64_t ymd = ymdhms >> 17, ym = ymd >> 5, hms = ymdhms % (1 << 17);
  size_t n = fmt_ymd_hms(o, (unsigned)(ym / 13), (unsigned)(ym % 13), (unsigned)(ymd % 32),
                         (unsigned)(hms >> 12), (unsigned)((hms >> 6) % 64), (unsigned)(hms % 64));
  return n + fmt_frac(o + n, read_frac(p + 5, fsp), fsp);
}

static size_t fmt_timestamp(uint32_t sec, uint32_t usec, int fsp, char *o) {
  size_t n;
  if (sec == 0 && usec == 0) {
    n = fmt_ymd_hms(o, 0, 0, 0, 0, 0, 0);
  } else {
    time_t t = (time_t)sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    n = fmt_ymd_hms(o, (unsigned)tm.tm_year + 1900, (unsigned)tm.tm_mon + 1, (unsigned)tm.tm_mday,
                    (unsigned)tm.tm_hour, (unsigned)tm.tm_min, (unsigned)tm.tm_sec);
  }
  return n + fmt_frac(o + n, usec, fsp);
}

/* ------------------------------------------------------------------------- */
/* value decoding                                                            */

enum { DEC_OK = 0, DEC_TRUNC = -1, DEC_UNSUPPORTED = -2 };

/* metadata bytes of a column type in the TABLE_MAP (rpl_utility.cc table_def) */
static int meta_len(uint8_t type) {
  switch (type) {
  case MYSQL_TYPE_TINY_BLOB: case MYSQL_TYPE_MEDIUM_BLOB: case MYSQL_TYPE_LONG_BLOB:
  case MYSQL_TYPE_BLOB: case MYSQL_TYPE_DOUBLE: case MYSQL_TYPE_FLOAT:
  case MYSQL_TYPE_GEOMETRY: case T_JSON: case T_BLOB_COMPRESSED:
  case MYSQL_TYPE_TIME2: case MYSQL_TYPE_DATETIME2: case MYSQL_TYPE_TIMESTAMP2:
    return 1;
  case MYSQL_TYPE_SET: case MYSQL_TYPE_ENUM: case MYSQL_TYPE_STRING:
  case MYSQL_TYPE_BIT: case MYSQL_TYPE_VARCHAR: case MYSQL_TYPE_NEWDECIMAL:
  case T_VARCHAR_COMPRESSED:
    return 2;
  default:
    return 0;
  }
}

/* Fill type/meta/maxlen of a column from its raw table-map type and metadata. */
static void col_setup(bcol *c, uint8_t type, uint16_t meta) {
  c->type = type;
  c->meta = meta;
  c->maxlen = 0;
  if (type == MYSQL_TYPE_STRING) {
    unsigned b0 = meta >> 8, b1 = meta & 0xFF;
    if ((b0 & 0x30) != 0x30) {      /* long CHAR: length bits hidden in byte 0 */
      c->maxlen = b1 | (((b0 & 0x30) ^ 0x30) << 4);
    } else if (b0 == MYSQL_TYPE_ENUM || b0 == MYSQL_TYPE_SET) {
      c->type = (uint8_t)b0;
      c->maxlen = b1;
    } else {
      c->maxlen = b1;
    }
  } else if (type == MYSQL_TYPE_ENUM || type == MYSQL_TYPE_SET) {
    c->maxlen = meta & 0xFF;
  }
}

static int type_class(const bcol *c) {
  switch (c->type) {
  case MYSQL_TYPE_TINY: case MYSQL_TYPE_SHORT: case MYSQL_TYPE_INT24: case MYSQL_TYPE_LONG:
  case MYSQL_TYPE_LONGLONG: case MYSQL_TYPE_FLOAT: case MYSQL_TYPE_DOUBLE:
  case MYSQL_TYPE_NEWDECIMAL: case MYSQL_TYPE_DECIMAL: case MYSQL_TYPE_YEAR:
    return MOCDC_NUM;
  case MYSQL_TYPE_BIT:
    return MOCDC_BIT;
  case MYSQL_TYPE_GEOMETRY:
    return MOCDC_BIN;
  case MYSQL_TYPE_STRING: case MYSQL_TYPE_VARCHAR: case MYSQL_TYPE_VAR_STRING:
  case MYSQL_TYPE_BLOB: case MYSQL_TYPE_TINY_BLOB: case MYSQL_TYPE_MEDIUM_BLOB:
  case MYSQL_TYPE_LONG_BLOB:
    return c->binary ? MOCDC_BIN : MOCDC_STR;
  default:
    return MOCDC_STR;
  }
}

/* columns counted by the SIGNEDNESS optional metadata: MySQL counts the numeric
 * types; MariaDB also YEAR (Field_year is a Field_tiny there; mariadb-binlog
 * --print-table-metadata gets this wrong) */
static int is_signed_type(uint8_t t, int mariadb) {
  return (mariadb && t == MYSQL_TYPE_YEAR) || t == MYSQL_TYPE_TINY || t == MYSQL_TYPE_SHORT ||
         t == MYSQL_TYPE_INT24 || t == MYSQL_TYPE_LONG ||
         t == MYSQL_TYPE_LONGLONG || t == MYSQL_TYPE_NEWDECIMAL || t == MYSQL_TYPE_FLOAT ||
         t == MYSQL_TYPE_DOUBLE;
}
static int is_character_type(uint8_t t) {
  return t == MYSQL_TYPE_STRING || t == MYSQL_TYPE_VAR_STRING || t == MYSQL_TYPE_VARCHAR ||
         t == MYSQL_TYPE_BLOB || t == MYSQL_TYPE_GEOMETRY;
}
static int is_enum_set(uint8_t t) { return t == MYSQL_TYPE_ENUM || t == MYSQL_TYPE_SET; }

static const char *type_name(uint8_t t) {
  switch (t) {
  case T_JSON: return "MySQL's binary JSON";
  case T_VARCHAR_COMPRESSED: return "VARCHAR COMPRESSED";
  case T_BLOB_COMPRESSED: return "BLOB COMPRESSED";
  case MYSQL_TYPE_DECIMAL: return "old DECIMAL (MySQL 4)";
  case MYSQL_TYPE_VAR_STRING: return "old VAR_STRING";
  default: return "unknown";
  }
}

/* Reserve n bytes of scratch for one value; returns the write pointer. */
static char *scratch_at(mocdc_buf *sb, size_t n) {
  if (mocdc_buf_reserve(sb, n) != 0) return NULL;
  return sb->p + sb->len;
}

#define NEED(n) do { if ((size_t)(end - p) < (size_t)(n)) return DEC_TRUNC; } while (0)
#define OUT_SCRATCH(maxn) \
  do { o = scratch_at(sb, (maxn)); if (!o) return DEC_TRUNC; } while (0)

/* Zero-pad a numeric value in place to the ZEROFILL width (room reserved). */
static size_t apply_zerofill(char *o, size_t n, unsigned width) {
  if (width <= n) return n;
  size_t pad = width - n;
  memmove(o + pad, o, n);
  memset(o, '0', pad);
  return width;
}

/* Text of a column in another charset: converted to utf8mb4 into scratch. */
static int converted(const bcol *c, const char *in, size_t n, mocdc_buf *sb, vref *v) {
  size_t out;
  if (conv_run(c->cv, in, n, sb, &out) != 0) return -1;
  v->p = NULL;
  v->len = out;
  v->soff = (long)sb->len;
  sb->len += out;
  return 0;
}

/* Decode one non-NULL value of column c at p. On success returns the number of
 * bytes consumed and sets *v (pointing into the event or at a scratch offset). */
static long decode_value(const bcol *c, const uint8_t *p, const uint8_t *end, mocdc_buf *sb, vref *v) {
  char *o = NULL;
  size_t n = 0;
  long used;
  int fsp;
  switch (c->type) {
  case MYSQL_TYPE_TINY:
    NEED(1); OUT_SCRATCH(4 + c->zerofill);
    n = c->uns ? fmt_u64(o, p[0]) : fmt_i64(o, (int8_t)p[0]);
    used = 1; break;
  case MYSQL_TYPE_SHORT:
    NEED(2); OUT_SCRATCH(6 + c->zerofill);
    n = c->uns ? fmt_u64(o, le16(p)) : fmt_i64(o, (int16_t)le16(p));
    used = 2; break;
  case MYSQL_TYPE_INT24: {
    NEED(3); OUT_SCRATCH(8 + c->zerofill);
    uint32_t u = le24(p);
    n = c->uns ? fmt_u64(o, u) : fmt_i64(o, (int32_t)(u << 8) >> 8);
    used = 3; break;
  }
  case MYSQL_TYPE_LONG:
    NEED(4); OUT_SCRATCH(11 + c->zerofill);
    n = c->uns ? fmt_u64(o, le32(p)) : fmt_i64(o, (int32_t)le32(p));
    used = 4; break;
  case MYSQL_TYPE_LONGLONG:
    NEED(8); OUT_SCRATCH(21 + c->zerofill);
    n = c->uns ? fmt_u64(o, le64(p)) : fmt_i64(o, (int64_t)le64(p));
    used = 8; break;
  case MYSQL_TYPE_FLOAT: {
    NEED(4); OUT_SCRATCH(400 + c->zerofill);
    float f;
    uint32_t u = le32(p);
    memcpy(&f, &u, 4);
    /* FLOAT's own text form (6 significant digits) does not round-trip: write
     * the float's exact value as a DOUBLE, as the snapshot source reads FLOAT
     * columns (CAST(f AS DOUBLE)); the sink stores the identical float. */
    if (c->decimals >= 0) n = (size_t)snprintf(o, 400, "%.*f", c->decimals, (double)f);
    else n = fmt_real((double)f, 0, o);
    used = 4; break;
  }
  case MYSQL_TYPE_DOUBLE: {
    NEED(8); OUT_SCRATCH(400 + c->zerofill);
    double d;
    uint64_t u = le64(p);
    memcpy(&d, &u, 8);
    if (c->decimals >= 0) n = (size_t)snprintf(o, 400, "%.*f", c->decimals, d);
    else n = fmt_real(d, 0, o);
    used = 8; break;
  }
  case MYSQL_TYPE_NEWDECIMAL: {
    int prec = c->meta >> 8, scale = c->meta & 0xFF;
    if (prec < 1 || prec > 65 || scale > 38 || scale > prec) return DEC_UNSUPPORTED;
    int size = decimal_size(prec, scale);
    NEED(size); OUT_SCRATCH(96 + c->zerofill);
    n = fmt_decimal(p, prec, scale, o);
    used = size; break;
  }
  case MYSQL_TYPE_YEAR:
    NEED(1); OUT_SCRATCH(4);
    if (p[0] == 0) { memcpy(o, "0000", 4); n = 4; }
    else n = fmt_u64(o, 1900u + p[0]);
    used = 1; break;
  case MYSQL_TYPE_DATE: case MYSQL_TYPE_NEWDATE: {
    NEED(3); OUT_SCRATCH(16);
    uint32_t d = le24(p);
    fmt_pad(o, (d >> 9) % 10000, 4); o[4] = '-';
    fmt_pad(o + 5, (d >> 5) & 15, 2); o[7] = '-';
    fmt_pad(o + 8, d & 31, 2);
    n = 10; used = 3; break;
  }
  case MYSQL_TYPE_TIME: {            /* pre-5.6 TIME: HHMMSS as a signed 3-byte integer */
    NEED(3); OUT_SCRATCH(16);
    int32_t t = (int32_t)(le24(p) << 8) >> 8;
    int neg = t < 0;
    if (neg) t = -t;
    n = fmt_hms(o, neg, (unsigned)(t / 10000), (unsigned)(t % 10000 / 100), (unsigned)(t % 100));
    used = 3; break;
  }
  case MYSQL_TYPE_TIME2:
    fsp = c->meta > 6 ? 6 : c->meta;
    NEED(3 + frac_bytes(fsp)); OUT_SCRATCH(24);
    n = fmt_time2(p, fsp, o);
    used = 3 + frac_bytes(fsp); break;
  case MYSQL_TYPE_DATETIME: {        /* pre-5.6 DATETIME: YYYYMMDDhhmmss as an 8-byte integer */
    NEED(8); OUT_SCRATCH(32);
    uint64_t x = le64(p), d = x / 1000000, t = x % 1000000;
    n = fmt_ymd_hms(o, (unsigned)(d / 10000), (unsigned)(d % 10000 / 100), (unsigned)(d % 100),
                    (unsigned)(t / 10000), (unsigned)(t % 10000 / 100), (unsigned)(t % 100));
    used = 8; break;
  }
  case MYSQL_TYPE_DATETIME2:
    fsp = c->meta > 6 ? 6 : c->meta;
    NEED(5 + frac_bytes(fsp)); OUT_SCRATCH(32);
    n = fmt_datetime2(p, fsp, o);
    used = 5 + frac_bytes(fsp); break;
  case MYSQL_TYPE_TIMESTAMP:
    NEED(4); OUT_SCRATCH(32);
    n = fmt_timestamp(le32(p), 0, 0, o);
    used = 4; break;
  case MYSQL_TYPE_TIMESTAMP2:
    fsp = c->meta > 6 ? 6 : c->meta;
    NEED(4 + frac_bytes(fsp)); OUT_SCRATCH(32);
    n = fmt_timestamp((uint32_t)be_n(p, 4), read_frac(p + 4, fsp), fsp, o);
    used = 4 + frac_bytes(fsp); break;
  case MYSQL_TYPE_BIT: {
    size_t len = (c->meta >> 8) + ((c->meta & 0xFF) ? 1 : 0);
    NEED(len);
    v->p = (const char *)p; v->len = len; v->soff = -1;
    return (long)len;
  }
  case MYSQL_TYPE_ENUM: {
    int pl = c->maxlen == 2 ? 2 : 1;
    NEED(pl);
    uint32_t idx = pl == 2 ? le16(p) : p[0];
    if (idx == 0 || !c->vals || idx > (uint32_t)c->vals->n) {
      v->p = ""; v->len = 0;
    } else {
      v->p = c->vals->s[idx - 1]; v->len = c->vals->l[idx - 1];
    }
    v->soff = -1;
    return pl;
  }
  case MYSQL_TYPE_SET: {
    int pl = (int)c->maxlen;
    if (pl < 1 || pl > 8) return DEC_UNSUPPORTED;
    NEED(pl);
    uint64_t bits = 0;
    for (int i = pl - 1; i >= 0; i--) bits = (bits << 8) | p[i];
    size_t total = 0;
    int nv = c->vals ? c->vals->n : 0;
    for (int i = 0; i < nv && i < 64; i++)
      if (bits & ((uint64_t)1 << i)) total += c->vals->l[i] + 1;
    OUT_SCRATCH(total + 1);
    for (int i = 0; i < nv && i < 64; i++)
      if (bits & ((uint64_t)1 << i)) {
        if (n) o[n++] = ',';
        memcpy(o + n, c->vals->s[i], c->vals->l[i]);
        n += c->vals->l[i];
      }
    used = pl; break;
  }
  case MYSQL_TYPE_STRING: {
    size_t pl = c->maxlen < 256 ? 1 : 2;
    NEED(pl);
    size_t len = pl == 1 ? p[0] : le16(p);
    NEED(pl + len);
    if (c->binary && len < c->maxlen) {  /* BINARY(n): SELECT returns it \0-padded */
      OUT_SCRATCH(c->maxlen);
      memcpy(o, p + pl, len);
      memset(o + len, 0, c->maxlen - len);
      n = c->maxlen;
      used = (long)(pl + len);
      break;
    }
    if (c->cv) return converted(c, (const char *)p + pl, len, sb, v) ? DEC_TRUNC : (long)(pl + len);
    v->p = (const char *)p + pl; v->len = len; v->soff = -1;
    return (long)(pl + len);
  }
  case MYSQL_TYPE_VARCHAR: {
    size_t pl = c->meta < 256 ? 1 : 2;
    NEED(pl);
    size_t len = pl == 1 ? p[0] : le16(p);
    NEED(pl + len);
    if (c->cv) return converted(c, (const char *)p + pl, len, sb, v) ? DEC_TRUNC : (long)(pl + len);
    v->p = (const char *)p + pl; v->len = len; v->soff = -1;
    return (long)(pl + len);
  }
  case MYSQL_TYPE_BLOB: case MYSQL_TYPE_TINY_BLOB: case MYSQL_TYPE_MEDIUM_BLOB:
  case MYSQL_TYPE_LONG_BLOB: case MYSQL_TYPE_GEOMETRY: {
    int pl = c->meta & 0xFF;
    if (pl < 1 || pl > 4) return DEC_UNSUPPORTED;
    NEED(pl);
    size_t len = (size_t)(pl == 1 ? p[0] : pl == 2 ? le16(p) : pl == 3 ? le24(p) : le32(p));
    NEED((size_t)pl + len);
    if (c->cv) return converted(c, (const char *)p + pl, len, sb, v) ? DEC_TRUNC : (long)((size_t)pl + len);
    v->p = (const char *)p + pl; v->len = len; v->soff = -1;
    return (long)(pl + len);
  }
  default:
    return DEC_UNSUPPORTED;
  }
  if (c->zerofill && c->cls == MOCDC_NUM) n = apply_zerofill(o, n, c->zerofill);
  v->p = NULL;
  v->len = n;
  v->soff = (long)sb->len;
  sb->len += n;
  return used;
}

/* ------------------------------------------------------------------------- */
/* name and table-map caches                                                 */

static uint32_t name_hash(const char *db, size_t dl, const char *tb, size_t tl) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < dl; i++) h = (h ^ (uint8_t)db[i]) * 16777619u;
  h = (h ^ 0xFF) * 16777619u;
  for (size_t i = 0; i < tl; i++) h = (h ^ (uint8_t)tb[i]) * 16777619u;
  return h;
}

static tname *name_get(stream *s, const char *db, size_t dl, const char *tb, size_t tl, int create) {
  uint32_t h = name_hash(db, dl, tb, tl);
  tname **slot = &s->names[h % NAME_BUCKETS];
  for (tname *n = *slot; n; n = n->next)
    if (n->hash == h && strlen(n->db) == dl && strlen(n->tbl) == tl && memcmp(n->db, db, dl) == 0 &&
        memcmp(n->tbl, tb, tl) == 0)
      return n;
  if (!create) return NULL;
  tname *n = calloc(1, sizeof *n);
  if (!n) return NULL;
  n->db = malloc(dl + 1);
  n->tbl = malloc(tl + 1);
  if (!n->db || !n->tbl) { free(n->db); free(n->tbl); free(n); return NULL; }
  memcpy(n->db, db, dl); n->db[dl] = 0;
  memcpy(n->tbl, tb, tl); n->tbl[tl] = 0;
  n->hash = h;
  n->want = -1;
  n->next = *slot;
  *slot = n;
  return n;
}

static tmap *map_find(stream *s, uint64_t id) {
  for (tmap *t = s->maps[id % MAP_BUCKETS]; t; t = t->next)
    if (t->id == id) return t;
  return NULL;
}

static void maps_clear(stream *s) {
  for (int i = 0; i < MAP_BUCKETS; i++) {
    tmap *t = s->maps[i];
    while (t) {
      tmap *nx = t->next;
      tmap_clear(t);
      free(t);
      t = nx;
    }
    s->maps[i] = NULL;
  }
  s->nmaps = 0;
  s->acc_t = NULL;
  s->rc.active = 0;
}

static void names_clear(stream *s) {
  for (int i = 0; i < NAME_BUCKETS; i++) {
    tname *n = s->names[i];
    while (n) {
      tname *nx = n->next;
      spec_free(n->spec, n->nspec);
      free(n->db); free(n->tbl); free(n);
      n = nx;
    }
    s->names[i] = NULL;
  }
}

/* Read a list of length-prefixed strings (COLUMN_NAME and ENUM/SET value lists). */
static int read_strlist(const uint8_t **pp, const uint8_t *end, strlist *out, uint64_t count) {
  if (count > 65536) return -1;
  out->s = calloc(count ? count : 1, sizeof *out->s);
  out->l = calloc(count ? count : 1, sizeof *out->l);
  if (!out->s || !out->l) return -1;
  for (uint64_t i = 0; i < count; i++) {
    uint64_t len;
    if (rd_packed(pp, end, &len) != 0 || (uint64_t)(end - *pp) < len) return -1;
    out->s[i] = malloc(len + 1);
    if (!out->s[i]) return -1;
    memcpy(out->s[i], *pp, len);
    out->s[i][len] = 0;
    out->l[i] = len;
    out->n = (int)i + 1;
    *pp += len;
  }
  return 0;
}

/* Parse a TABLE_MAP body into t (fresh). Returns 0, or -1 with s->err set. */
static int tmap_parse(stream *s, tmap *t, const uint8_t *body, const uint8_t *end) {
  const uint8_t *p = body;
  int ph = s->post_hdr[TABLE_MAP_EVENT - 1] ? s->post_hdr[TABLE_MAP_EVENT - 1] : 8;
  if (end - p < ph + 2) goto corrupt;
  t->id = ph == 6 ? le32(p) : le48(p);
  p += ph;
  size_t dl = *p++;
  if ((size_t)(end - p) < dl + 2) goto corrupt;
  const char *db = (const char *)p;
  p += dl + 1;
  size_t tl = *p++;
  if ((size_t)(end - p) < tl + 1) goto corrupt;
  const char *tb = (const char *)p;
  p += tl + 1;
  uint64_t nc;
  if (rd_packed(&p, end, &nc) != 0 || nc > 4096 || (uint64_t)(end - p) < nc) goto corrupt;
  t->ncols = (int)nc;
  int n = t->ncols ? t->ncols : 1;
  t->types = malloc((size_t)n);
  t->meta = calloc((size_t)n, sizeof *t->meta);
  t->sign = malloc((size_t)n);
  t->bin = malloc((size_t)n);
  t->lists = calloc((size_t)n, sizeof *t->lists);
  t->ulists = calloc((size_t)n, sizeof *t->ulists);
  t->cs = calloc((size_t)n, sizeof *t->cs);
  t->cols = calloc((size_t)n, sizeof *t->cols);
  if (!t->types || !t->meta || !t->sign || !t->bin || !t->lists || !t->ulists || !t->cs || !t->cols) goto oom;
  memcpy(t->types, p, (size_t)nc);
  memset(t->sign, -1, (size_t)n);
  memset(t->bin, -1, (size_t)n);
  p += nc;
  uint64_t ml;
  if (rd_packed(&p, end, &ml) != 0 || (uint64_t)(end - p) < ml) goto corrupt;
  const uint8_t *m = p, *mend = p + ml;
  for (int i = 0; i < t->ncols; i++) {
    uint8_t ty = t->types[i];
    int l = meta_len(ty);
    if (mend - m < l) goto corrupt;
    if (l == 1) t->meta[i] = m[0];
    else if (l == 2) {
      if (ty == MYSQL_TYPE_VARCHAR || ty == T_VARCHAR_COMPRESSED) t->meta[i] = (uint16_t)le16(m);
      else if (ty == MYSQL_TYPE_BIT) t->meta[i] = (uint16_t)(m[0] | (m[1] << 8)); /* bits%8, bytes */
      else t->meta[i] = (uint16_t)((m[0] << 8) | m[1]);                         /* STRING/ENUM/SET/DECIMAL */
    }
    m += l;
  }
  p = mend;
  size_t nb = ((size_t)nc + 7) / 8;
  if ((size_t)(end - p) < nb) goto corrupt;
  p += nb;                                  /* nullability: not needed */

  t->sig = 2166136261u;
  for (int i = 0; i < t->ncols; i++) {
    t->sig = (t->sig ^ t->types[i]) * 16777619u;
    t->sig = (t->sig ^ (t->meta[i] & 0xFF)) * 16777619u;
    t->sig = (t->sig ^ (t->meta[i] >> 8)) * 16777619u;
  }
  if (!t->sig) t->sig = 1;

  /* bcol setup first: optional metadata needs real types (ENUM/SET) */
  for (int i = 0; i < t->ncols; i++) col_setup(&t->cols[i], t->types[i], t->meta[i]);

  /* optional metadata (binlog_row_metadata=MINIMAL|FULL) */
  while (p < end) {
    uint8_t ft = *p++;
    uint64_t fl;
    if (rd_packed(&p, end, &fl) != 0 || (uint64_t)(end - p) < fl) goto corrupt;
    const uint8_t *f = p, *fend = p + fl;
    p = fend;
    switch (ft) {
    case SIGNEDNESS: {
      int k = 0;
      for (int i = 0; i < t->ncols; i++) {
        if (!is_signed_type(t->cols[i].type, s->mariadb)) continue;
        if ((size_t)(k / 8) < fl) t->sign[i] = (f[k / 8] >> (7 - k % 8)) & 1;
        k++;
      }
      break;
    }
    case DEFAULT_CHARSET: case ENUM_AND_SET_DEFAULT_CHARSET: {
      int es = ft == ENUM_AND_SET_DEFAULT_CHARSET;
      uint64_t def, idx, cs;
      if (rd_packed(&f, fend, &def) != 0) goto corrupt;
      for (int i = 0; i < t->ncols; i++)
        if (es ? is_enum_set(t->cols[i].type) : is_character_type(t->cols[i].type)) {
          t->cs[i] = (uint16_t)def;
          if (!es) t->bin[i] = def == 63;
        }
      /* exceptions: (column index among those columns, collation) pairs */
      while (f < fend) {
        if (rd_packed(&f, fend, &idx) != 0 || rd_packed(&f, fend, &cs) != 0) goto corrupt;
        int k = 0;
        for (int i = 0; i < t->ncols; i++) {
          if (!(es ? is_enum_set(t->cols[i].type) : is_character_type(t->cols[i].type))) continue;
          if ((uint64_t)k == idx) {
            t->cs[i] = (uint16_t)cs;
            if (!es) t->bin[i] = cs == 63;
            break;
          }
          k++;
        }
      }
      break;
    }
    case COLUMN_CHARSET: case ENUM_AND_SET_COLUMN_CHARSET: {
      int es = ft == ENUM_AND_SET_COLUMN_CHARSET;
      for (int i = 0; i < t->ncols && f < fend; i++) {
        if (!(es ? is_enum_set(t->cols[i].type) : is_character_type(t->cols[i].type))) continue;
        uint64_t cs;
        if (rd_packed(&f, fend, &cs) != 0) goto corrupt;
        t->cs[i] = (uint16_t)cs;
        if (!es) t->bin[i] = cs == 63;
      }
      break;
    }
    case COLUMN_NAME: {
      strlist sl = {0, NULL, NULL};
      if (read_strlist(&f, fend, &sl, (uint64_t)t->ncols) != 0) { strlist_free(&sl); goto corrupt; }
      t->names = sl.s;          /* take the strings; lengths not needed */
      free(sl.l);
      t->has_names = 1;
      break;
    }
    case SET_STR_VALUE: case ENUM_STR_VALUE: {
      uint8_t want = ft == SET_STR_VALUE ? MYSQL_TYPE_SET : MYSQL_TYPE_ENUM;
      for (int i = 0; i < t->ncols && f < fend; i++) {
        if (t->cols[i].type != want) continue;
        uint64_t cnt;
        if (rd_packed(&f, fend, &cnt) != 0) goto corrupt;
        strlist_free(&t->lists[i]);
        if (read_strlist(&f, fend, &t->lists[i], cnt) != 0) goto corrupt;
      }
      break;
    }
    default:
      break;                    /* GEOMETRY_TYPE, keys, ENUM/SET charsets: not needed */
    }
  }
  t->nm = name_get(s, db, dl, tb, tl, 1);
  if (!t->nm) goto oom;
  return 0;
corrupt:
  snprintf(s->err, ERRLEN, "corrupt TABLE_MAP event at %s:%llu", s->file, (unsigned long long)s->pos);
  return -1;
oom:
  snprintf(s->err, ERRLEN, "out of memory reading a TABLE_MAP event");
  return -1;
}

static const colspec *spec_for(const tname *nm, const tmap *t, int i) {
  if (!nm->spec) return NULL;
  if (!t->has_names) return i < nm->nspec ? &nm->spec[i] : NULL;
  if (i < nm->nspec && nm->spec[i].name && strcmp(nm->spec[i].name, t->names[i]) == 0) return &nm->spec[i];
  for (int k = 0; k < nm->nspec; k++)
    if (nm->spec[k].name && strcmp(nm->spec[k].name, t->names[i]) == 0) return &nm->spec[k];
  return NULL;
}

/* The converter of a charset to utf8mb4 (cached per stream), or NULL. */
static const conv *conv_get(stream *s, const char *csname, const char *enc) {
  for (int i = 0; i < s->nconvs; i++)
    if (strcmp(s->convs[i].name, csname) == 0) return &s->convs[i];
  if (s->nconvs >= MAX_CONVS) return NULL;
  conv *c = &s->convs[s->nconvs];
  snprintf(c->name, sizeof c->name, "%s", csname);
  if (strcmp(csname, "latin1") == 0) {
    c->kind = CONV_LATIN1;
  } else {
    iconv_t cd = iconv_open("UTF-8", iconv_name(csname, enc));
    if (cd == (iconv_t)-1) return NULL;
    c->kind = CONV_ICONV;
    c->cd = cd;
  }
  s->nconvs++;
  return c;
}

/* Convert an ENUM/SET value list to utf8mb4. */
static int convert_list(const conv *cv, const strlist *in, strlist *out) {
  mocdc_buf b = {NULL, 0, 0};
  out->s = calloc((size_t)in->n + 1, sizeof *out->s);
  out->l = calloc((size_t)in->n + 1, sizeof *out->l);
  if (!out->s || !out->l) return -1;
  for (int i = 0; i < in->n; i++) {
    size_t n;
    b.len = 0;
    if (conv_run(cv, in->s[i], in->l[i], &b, &n) != 0 || !(out->s[i] = malloc(n + 1))) {
      mocdc_buf_free(&b);
      return -1;
    }
    memcpy(out->s[i], b.p, n);
    out->s[i][n] = 0;
    out->l[i] = n;
    out->n = i + 1;
  }
  mocdc_buf_free(&b);
  return 0;
}

/* Merge the table map with set_schema() into t->cols.
 * Returns 0 ok, 1 column names missing (need_schema), -1 error (s->err). */
static int tmap_resolve(stream *s, tmap *t) {
  tname *nm = t->nm;
  if (t->resolved && t->resolved_gen == nm->gen) return 0;
  if (!t->has_names && !nm->spec) return 1;
  /* without names in the binlog, a schema given for other column types (a DDL
   * happened since) must be given again */
  if (!t->has_names && nm->spec_sig && nm->spec_sig != t->sig) return 1;
  if (!t->has_names && nm->nspec != t->ncols) {
    snprintf(s->err, ERRLEN,
             "the schema given for `%s`.`%s` has %d columns but its binlog rows have %d "
             "(did a DDL change the table? give the schema as of this binlog position)",
             nm->db, nm->tbl, nm->nspec, t->ncols);
    return -1;
  }
  for (int i = 0; i < t->ncols; i++) {
    bcol *c = &t->cols[i];
    const colspec *cs = spec_for(nm, t, i);
    col_setup(c, t->types[i], t->meta[i]);
    c->name = t->has_names ? t->names[i] : cs->name;
    c->uns = t->sign[i] >= 0 ? (uint8_t)t->sign[i] : (uint8_t)(cs && cs->uns);
    c->binary = t->bin[i] >= 0 ? (uint8_t)t->bin[i] : (uint8_t)(cs && cs->cls == MOCDC_BIN);
    c->decimals = cs ? cs->decimals : -1;
    c->zerofill = cs ? cs->zerofill : 0;
    c->vals = NULL;
    c->cls = (uint8_t)type_class(c);
    if (t->bin[i] < 0 && cs && cs->cls >= 0 && (c->cls == MOCDC_STR || c->cls == MOCDC_BIN) &&
        (c->type == MYSQL_TYPE_STRING || c->type == MYSQL_TYPE_VARCHAR || c->type == MYSQL_TYPE_BLOB))
      c->cls = (uint8_t)cs->cls;
    /* text in a charset other than utf8mb4: converted as a utf8mb4 SELECT would */
    c->cv = NULL;
    int texty = !c->binary && (c->type == MYSQL_TYPE_STRING || c->type == MYSQL_TYPE_VARCHAR ||
                               c->type == MYSQL_TYPE_BLOB || is_enum_set(c->type));
    if (texty) {
      const char *csname = NULL, *enc = NULL;
      MARIADB_CHARSET_INFO *ci = NULL;
      if (t->cs[i]) ci = mariadb_get_charset_by_nr(t->cs[i]);   /* unknown ids: assumed utf8 */
      else if (cs && cs->charset) ci = mariadb_get_charset_by_name(cs->charset);
      if (ci) { csname = ci->csname; enc = ci->encoding; }
      else if (!t->cs[i] && cs && cs->charset) csname = cs->charset;
      if (!charset_is_utf8(csname)) {
        c->cv = conv_get(s, csname, enc);
        if (!c->cv) {
          snprintf(s->err, ERRLEN, "column `%s` of `%s`.`%s` is in charset %s, which mocdc cannot convert to utf8mb4 "
                   "(no iconv converter)", c->name ? c->name : "?", nm->db, nm->tbl, csname);
          return -1;
        }
      }
    }
    if (c->type == MYSQL_TYPE_ENUM || c->type == MYSQL_TYPE_SET) {
      int is_set = c->type == MYSQL_TYPE_SET;
      if (t->lists[i].n && c->cv) {     /* values from the table map are in the column's charset */
        if (!t->ulists[i].n && convert_list(c->cv, &t->lists[i], &t->ulists[i]) != 0) {
          snprintf(s->err, ERRLEN, "out of memory");
          return -1;
        }
        c->vals = &t->ulists[i];
      } else if (t->lists[i].n) {
        c->vals = &t->lists[i];
      } else if (cs && (is_set ? cs->sv.n : cs->ev.n)) {   /* from information_schema: utf8mb4 */
        c->vals = is_set ? &cs->sv : &cs->ev;
      } else {
        snprintf(s->err, ERRLEN,
                 "column `%s` of `%s`.`%s` is %s but its values are unknown: set "
                 "binlog_row_metadata=FULL on the source, or give %s_values in set_schema",
                 c->name, nm->db, nm->tbl, is_set ? "a SET" : "an ENUM", is_set ? "set" : "enum");
        return -1;
      }
      c->cv = NULL;                     /* the value lists are utf8mb4 now */
    }
    if (!c->name) {
      snprintf(s->err, ERRLEN, "column %d of `%s`.`%s` has no name in the schema given", i + 1, nm->db, nm->tbl);
      return -1;
    }
  }
  t->resolved = 1;
  t->resolved_gen = nm->gen;
  if (!t->has_names) nm->spec_sig = t->sig;
  return 0;
}

/* ------------------------------------------------------------------------- */
/* stream                                                                    */

static stream *check_stream(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, BINLOG_MT);
}

static stream *check_open(lua_State *L, int idx) {
  stream *s = check_stream(L, idx);
  if (!s->my) luaL_error(L, "binlog stream is closed");
  return s;
}

static void stream_close(stream *s) {
  if (s->ev) { mariadb_free_rpl_event(s->ev); s->ev = NULL; }
  if (s->rpl) { mariadb_rpl_close(s->rpl); s->rpl = NULL; }
  if (s->my) { mysql_close(s->my); s->my = NULL; }
  mocdc_batch_free(s->acc); s->acc = NULL;
  maps_clear(s);
  names_clear(s);
  mocdc_buf_free(&s->scratch);
  mocdc_buf_free(&s->ubuf);
  free(s->vr); free(s->vp); free(s->vl);
  s->vr = NULL; s->vp = NULL; s->vl = NULL; s->vcap = 0;
  free(s->deferred); s->deferred = NULL;
  s->ev_pending = 0;
  for (int i = 0; i < s->nconvs; i++)
    if (s->convs[i].kind == CONV_ICONV) iconv_close(s->convs[i].cd);
  s->nconvs = 0;
}

static void set_str(lua_State *L, const char *k, const char *v, size_t n) {
  lua_pushlstring(L, v, n);
  lua_setfield(L, -2, k);
}
static void set_num(lua_State *L, const char *k, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}
static void new_event(lua_State *L, const char *type, int extra) {
  lua_createtable(L, 0, extra + 1);
  lua_pushstring(L, type);
  lua_setfield(L, -2, "type");
}
static void set_filepos(lua_State *L, stream *s) {
  lua_pushstring(L, s->file);
  lua_setfield(L, -2, "file");
  set_num(L, "pos", (double)s->pos);
}

/* Mark the current event consumed and advance the position. */
static void consume(stream *s) {
  uint32_t log_pos = le32(s->h + 13);
  if (log_pos) s->pos = log_pos;
  s->ev_pending = 0;
  s->rc.active = 0;
  s->n_events++;
}

#define GRANT_HINT "(on MariaDB: GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO ...; on MySQL: " \
                   "GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO ...)"

/* Turn a fetch failure into one clear message. */
static void fetch_error(stream *s, unsigned err, const char *msg) {
  const char *f = s->file;
  unsigned long long pos = (unsigned long long)s->pos;
  if (err == 1227 || err == 1045 || err == 1142) {
    snprintf(s->err, ERRLEN, "user '%s' may not read the binlog of source %s: %s " GRANT_HINT, s->user, s->where,
             msg);
  } else if (err == 1236 && (strstr(msg, "Could not find first log file") || strstr(msg, "could not find first log"))) {
    snprintf(s->err, ERRLEN,
             "binlog file '%s' is no longer on source %s (purged?): the saved position %s:%llu cannot be "
             "resumed; start over from a new snapshot (server said: %s)", f, s->where, f, pos, msg);
  } else if (strstr(msg, "same server_uuid/server_id") || strstr(msg, "same server_id")) {
    snprintf(s->err, ERRLEN,
             "another replica connected to source %s with the same server_id %u, and the source dropped "
             "this binlog stream; give every mocdc pipeline and replica a unique server_id (server said: %s)",
             s->where, s->server_id, msg);
  } else if (err == 1236 && strstr(msg, "position > file size")) {
    snprintf(s->err, ERRLEN, "position %llu is past the end of binlog file '%s' on source %s (server said: %s)",
             pos, f, s->where, msg);
  } else if (err == 1236) {
    snprintf(s->err, ERRLEN, "source %s stopped the binlog stream at %s:%llu: %s", s->where, f, pos, msg);
  } else if (err == 2013 || err == 2006 || err == 2055) {
    snprintf(s->err, ERRLEN,
             "lost the binlog connection to source %s at %s:%llu: %s (if this repeats right after "
             "connecting, another replica may be using server_id %u)", s->where, f, pos, msg, s->server_id);
  } else {
    snprintf(s->err, ERRLEN, "binlog stream from source %s failed at %s:%llu: %s", s->where, f, pos,
             msg && *msg ? msg : "unknown error");
  }
}

/* Fetch the next event. 1 = event, 0 = EOF (non-blocking), -1 = error (s->err). */
static int fetch(stream *s) {
  s->deferred_errno = 0;
  MARIADB_RPL_EVENT *ev = mariadb_rpl_fetch(s->rpl, s->ev);
  if (!ev) {
    s->ev = NULL;   /* the library frees the event it was given when it returns NULL */
    unsigned err = mysql_errno(s->my);
    const char *msg = mysql_error(s->my);
    if (!err) { err = mariadb_rpl_errno(s->rpl); msg = mariadb_rpl_error(s->rpl); }
    if (!err) return 0;
    fetch_error(s, err, msg);
    s->deferred_errno = (int)err;
    return -1;
  }
  s->ev = ev;
  const uint8_t *raw = ev->raw_data;
  size_t ofs = ev->raw_data_ofs ? ev->raw_data_ofs : 1;   /* skip the OK byte */
  if (!raw || ev->raw_data_size < ofs + HDR_LEN) {
    snprintf(s->err, ERRLEN, "short binlog packet from %s at %s:%llu", s->where, s->file,
             (unsigned long long)s->pos);
    return -1;
  }
  s->h = raw + ofs;
  s->evlen = le32(s->h + 9);
  if (s->evlen < HDR_LEN || s->evlen > ev->raw_data_size - ofs) {
    snprintf(s->err, ERRLEN, "corrupt binlog event (length %u) from %s at %s:%llu", s->evlen, s->where,
             s->file, (unsigned long long)s->pos);
    return -1;
  }
  return 1;
}

/* event body without header and checksum */
static void body_of(stream *s, const uint8_t **b, const uint8_t **e) {
  *b = s->h + HDR_LEN;
  size_t blen = s->evlen - HDR_LEN;
  if (s->h[4] != FORMAT_DESCRIPTION_EVENT && blen >= (size_t)s->crc) blen -= (size_t)s->crc;
  *e = *b + blen;
}

static int ensure_vcap(stream *s, int ncols) {
  if (s->vcap >= ncols) return 0;
  int n = ncols < 64 ? 64 : ncols;
  vref *vr = realloc(s->vr, sizeof *vr * (size_t)n * 2);
  if (vr) s->vr = vr;
  const char **vp = realloc(s->vp, sizeof *vp * (size_t)n * 2);
  if (vp) s->vp = vp;
  unsigned long *vl = realloc(s->vl, sizeof *vl * (size_t)n * 2);
  if (vl) s->vl = vl;
  if (!vr || !vp || !vl) return -1;
  s->vcap = n;
  return 0;
}

/* Start decoding a rows event: table id, bitmaps, (uncompressed) row data. */
static int rows_begin(stream *s, tmap *t, int type) {
  const uint8_t *b, *e;
  body_of(s, &b, &e);
  int v2 = type == WRITE_ROWS_EVENT || type == UPDATE_ROWS_EVENT || type == DELETE_ROWS_EVENT ||
           type == WRITE_ROWS_COMPRESSED_EVENT || type == UPDATE_ROWS_COMPRESSED_EVENT ||
           type == DELETE_ROWS_COMPRESSED_EVENT;
  int compressed = type >= WRITE_ROWS_COMPRESSED_EVENT_V1 && type <= DELETE_ROWS_COMPRESSED_EVENT;
  int ph = s->post_hdr[type - 1] ? s->post_hdr[type - 1] : (v2 ? 10 : 8);
  const uint8_t *p = b;
  if (e - p < ph) goto corrupt;
  p += ph;
  if (v2 && ph >= 10) {
    uint32_t extra = le16(b + 8);
    if (extra < 2 || (uint32_t)(e - p) < extra - 2) goto corrupt;
    p += extra - 2;
  }
  uint64_t nc;
  if (rd_packed(&p, e, &nc) != 0) goto corrupt;
  if ((int)nc != t->ncols) {
    snprintf(s->err, ERRLEN, "rows event for `%s`.`%s` has %llu columns but its table map has %d (at %s:%llu)",
             t->nm->db, t->nm->tbl, (unsigned long long)nc, t->ncols, s->file, (unsigned long long)s->pos);
    return -1;
  }
  size_t nb = ((size_t)nc + 7) / 8;
  int nbm = (type == UPDATE_ROWS_EVENT_V1 || type == UPDATE_ROWS_EVENT || type == UPDATE_ROWS_COMPRESSED_EVENT_V1 ||
             type == UPDATE_ROWS_COMPRESSED_EVENT) ? 2 : 1;
  if ((size_t)(e - p) < nb * (size_t)nbm) goto corrupt;
  for (int k = 0; k < nbm; k++, p += nb)
    for (int i = 0; i < t->ncols; i++)
      if (!(p[i / 8] & (1 << (i % 8)))) {
        snprintf(s->err, ERRLEN,
                 "binlog rows of `%s`.`%s` are not full row images (column %d missing at %s:%llu); mocdc needs "
                 "binlog_row_image=FULL on the source (SET GLOBAL binlog_row_image=FULL, or "
                 "binlog_row_image=FULL in my.cnf)", t->nm->db, t->nm->tbl, i + 1, s->file,
                 (unsigned long long)s->pos);
        return -1;
      }
  if (compressed) {
    if (mariadb_uncompress(p, (size_t)(e - p), &s->ubuf, s->err) != 0) return -1;
    p = (const uint8_t *)s->ubuf.p;
    e = p + s->ubuf.len;
  }
  s->rc.active = 1;
  s->rc.t = t;
  s->rc.p = p;
  s->rc.end = e;
  switch (type) {
  case WRITE_ROWS_EVENT_V1: case WRITE_ROWS_EVENT: case WRITE_ROWS_COMPRESSED_EVENT_V1:
  case WRITE_ROWS_COMPRESSED_EVENT:
    s->rc.op = MOCDC_INSERT; break;
  case UPDATE_ROWS_EVENT_V1: case UPDATE_ROWS_EVENT: case UPDATE_ROWS_COMPRESSED_EVENT_V1:
  case UPDATE_ROWS_COMPRESSED_EVENT:
    s->rc.op = MOCDC_UPDATE; break;
  default:
    s->rc.op = MOCDC_DELETE;
  }
  return 0;
corrupt:
  snprintf(s->err, ERRLEN, "corrupt rows event at %s:%llu", s->file, (unsigned long long)s->pos);
  return -1;
}

/* Decode one image (null bitmap + values) into vr[0..ncols). */
static int decode_image(stream *s, tmap *t, const uint8_t **pp, const uint8_t *end, vref *vr) {
  const uint8_t *p = *pp;
  size_t nb = ((size_t)t->ncols + 7) / 8;
  if ((size_t)(end - p) < nb) goto trunc;
  const uint8_t *nulls = p;
  p += nb;
  for (int i = 0; i < t->ncols; i++) {
    if (nulls[i / 8] & (1 << (i % 8))) {
      vr[i].p = NULL; vr[i].len = 0; vr[i].soff = -1;
      continue;
    }
    long n = decode_value(&t->cols[i], p, end, &s->scratch, &vr[i]);
    if (n == DEC_UNSUPPORTED) {
      const bcol *c = &t->cols[i];
      snprintf(s->err, ERRLEN, "column `%s` of `%s`.`%s`: %s is not supported yet (binlog type %d)",
               c->name, t->nm->db, t->nm->tbl, type_name(c->type), c->type);
      return -1;
    }
    if (n < 0) goto trunc;
    p += n;
  }
  *pp = p;
  return 0;
trunc:
  snprintf(s->err, ERRLEN, "truncated row in the rows event of `%s`.`%s` at %s:%llu", t->nm->db, t->nm->tbl,
           s->file, (unsigned long long)s->pos);
  for (int i = 0; i < t->ncols; i++) {
    uint8_t ty = t->cols[i].type;
    if (s->mariadb && (ty == MYSQL_TYPE_TIME || ty == MYSQL_TYPE_DATETIME || ty == MYSQL_TYPE_TIMESTAMP)) {
      size_t n = strlen(s->err);
      snprintf(s->err + n, ERRLEN - n, "; the table has TIME/DATETIME/TIMESTAMP columns in the pre-10.1 MariaDB "
               "format (mysql56_temporal_format=OFF), which cannot be read from the binlog when they have fractional "
               "seconds: convert the table with ALTER TABLE `%s`.`%s` FORCE", t->nm->db, t->nm->tbl);
      break;
    }
  }
  return -1;
}

static mocdc_batch *batch_for(tmap *t) {
  mocdc_batch *b = mocdc_batch_new(t->ncols);
  if (!b) return NULL;
  for (int i = 0; i < t->ncols; i++)
    if (mocdc_batch_set_column(b, i, t->cols[i].name, t->cols[i].cls) != 0) {
      mocdc_batch_free(b);
      return NULL;
    }
  return b;
}

/* Append rows of the current rows event to s->acc until the event ends or the
 * batch is full. Returns 1 event finished, 0 batch full (event continues), -1 error. */
static int rows_decode(stream *s, size_t max_rows, size_t max_bytes) {
  tmap *t = s->rc.t;
  int nc = t->ncols;
  uint32_t ts = le32(s->h);
  if (ensure_vcap(s, nc) != 0) goto oom;
  vref *bv = s->vr, *av = s->vr + nc;
  const char **bp = s->vp, **ap = s->vp + nc;
  unsigned long *bl = s->vl, *al = s->vl + nc;
  while (s->rc.p < s->rc.end) {
    if (s->acc->nrows >= max_rows || mocdc_batch_bytes(s->acc) >= max_bytes) return 0;
    const uint8_t *p = s->rc.p;
    s->scratch.len = 0;
    int op = s->rc.op;
    vref *first = op == MOCDC_INSERT ? av : bv;
    if (decode_image(s, t, &p, s->rc.end, first) != 0) return -1;
    if (op == MOCDC_UPDATE && decode_image(s, t, &p, s->rc.end, av) != 0) return -1;
    int has_b = op != MOCDC_INSERT, has_a = op != MOCDC_DELETE;
    for (int i = 0; i < nc; i++) {
      if (has_b) {
        vref *v = &bv[i];
        bp[i] = v->soff >= 0 ? s->scratch.p + v->soff : v->p;
        bl[i] = (unsigned long)v->len;
      }
      if (has_a) {
        vref *v = &av[i];
        ap[i] = v->soff >= 0 ? s->scratch.p + v->soff : v->p;
        al[i] = (unsigned long)v->len;
      }
    }
    if (mocdc_batch_add(s->acc, op, ts, has_b ? bp : NULL, has_b ? bl : NULL, has_a ? ap : NULL,
                        has_a ? al : NULL) != 0)
      goto oom;
    s->rc.p = p;
    s->n_rows++;
  }
  return 1;
oom:
  snprintf(s->err, ERRLEN, "out of memory decoding rows of `%s`.`%s`", t->nm->db, t->nm->tbl);
  return -1;
}

/* Push the accumulated batch as a "rows" event. */
static int push_rows(lua_State *L, stream *s) {
  /* the batch's memory is invisible to Lua's collector: account for it, so
   * batches the caller dropped without batch:free() do not pile up */
  int kb = (int)(mocdc_batch_bytes(s->acc) >> 10);
  if (kb > 0) lua_gc(L, LUA_GCSTEP, kb);
  new_event(L, "rows", 8);
  set_str(L, "db", s->acc_t->nm->db, strlen(s->acc_t->nm->db));
  set_str(L, "table", s->acc_t->nm->tbl, strlen(s->acc_t->nm->tbl));
  mocdc_batch_push(L, s->acc);
  lua_setfield(L, -2, "batch");
  lua_pushstring(L, s->file);
  lua_setfield(L, -2, "file");
  set_num(L, "pos", (double)s->acc_pos);
  set_num(L, "ts", (double)s->acc_ts);
  if (s->acc_more) {
    lua_pushboolean(L, 1);
    lua_setfield(L, -2, "more");
  }
  s->acc = NULL;
  s->acc_t = NULL;
  s->acc_more = 0;
  return 1;
}

/* true when rows are waiting to be pushed; an empty batch (a rows event without
 * rows) is dropped here */
static int have_rows(stream *s) {
  if (!s->acc) return 0;
  if (s->acc->nrows) return 1;
  mocdc_batch_free(s->acc);
  s->acc = NULL;
  s->acc_t = NULL;
  s->acc_more = 0;
  return 0;
}

static int push_error(lua_State *L, stream *s) {
  return mocdc_push_fail(L, s->err, s->deferred_errno, NULL);
}

static int starts_with_word(const char *q, size_t n, const char *w) {
  size_t i = 0, wl = strlen(w);
  while (i < n && (q[i] == ' ' || q[i] == '\t' || q[i] == '\n' || q[i] == '\r')) i++;
  if (n - i < wl || strncasecmp(q + i, w, wl) != 0) return 0;
  return n - i == wl || !((q[i + wl] >= 'A' && q[i + wl] <= 'Z') || (q[i + wl] >= 'a' && q[i + wl] <= 'z') ||
                          q[i + wl] == '_');
}

/* QUERY / QUERY_COMPRESSED -> begin / commit / rollback / statement / ddl. */
static int push_query(lua_State *L, stream *s, int compressed) {
  const uint8_t *b, *e;
  body_of(s, &b, &e);
  int ph = s->post_hdr[QUERY_EVENT - 1] ? s->post_hdr[QUERY_EVENT - 1] : 13;
  if (e - b < ph) goto corrupt;
  size_t dl = b[8];
  size_t sl = le16(b + 11);
  const uint8_t *p = b + ph;
  if ((size_t)(e - p) < sl + dl + 1) goto corrupt;
  p += sl;
  const char *db = (const char *)p;
  p += dl + 1;
  const char *q = (const char *)p;
  size_t qn = (size_t)(e - p);
  if (compressed) {
    if (mariadb_uncompress(p, qn, &s->ubuf, s->err) != 0) return -1;
    q = s->ubuf.p;
    qn = s->ubuf.len;
  }
  uint32_t ts = le32(s->h);
  consume(s);
  if (starts_with_word(q, qn, "BEGIN") || starts_with_word(q, qn, "START TRANSACTION")) {
    new_event(L, "begin", 2);
    set_filepos(L, s);
    return 1;
  }
  if (starts_with_word(q, qn, "COMMIT")) {
    new_event(L, "commit", 4);
    set_filepos(L, s);
    set_num(L, "ts", ts);
    return 1;
  }
  if (starts_with_word(q, qn, "ROLLBACK") && !starts_with_word(q, qn, "ROLLBACK TO")) {
    new_event(L, "rollback", 3);
    set_filepos(L, s);
    set_num(L, "ts", ts);
    return 1;
  }
  int dml = starts_with_word(q, qn, "INSERT") || starts_with_word(q, qn, "UPDATE") ||
            starts_with_word(q, qn, "DELETE") || starts_with_word(q, qn, "REPLACE") ||
            starts_with_word(q, qn, "LOAD");
  new_event(L, dml ? "statement" : "ddl", 6);
  set_str(L, "db", db, dl);
  set_str(L, "sql", q, qn);
  set_filepos(L, s);
  set_num(L, "ts", ts);
  return 1;
corrupt:
  snprintf(s->err, ERRLEN, "corrupt QUERY event at %s:%llu", s->file, (unsigned long long)s->pos);
  return -1;
}

/* Process the pending event. Returns >0 results pushed, 0 continue, -1 error. */
static int process(lua_State *L, stream *s, size_t max_rows, size_t max_bytes) {
  int type = s->h[4];
  uint32_t ts = le32(s->h);
  const uint8_t *b, *e;
  switch (type) {
  case FORMAT_DESCRIPTION_EVENT: {
    b = s->h + HDR_LEN;
    e = s->h + s->evlen;
    if (e - b < 57 + 5) goto corrupt;
    memset(s->post_hdr, 0, sizeof s->post_hdr);
    size_t n = (size_t)(e - b) - 57 - 5;
    if (n > sizeof s->post_hdr) n = sizeof s->post_hdr;
    memcpy(s->post_hdr, b + 57, n);
    s->crc = e[-5] ? 4 : 0;
    snprintf(s->server_version, sizeof s->server_version, "%.*s", (int)strnlen((const char *)b + 2, 50),
             (const char *)b + 2);
    s->mariadb = strstr(s->server_version, "MariaDB") != NULL;
    consume(s);
    return 0;
  }
  case ROTATE_EVENT: {
    if (have_rows(s)) return push_rows(L, s);
    body_of(s, &b, &e);
    if (e - b < 8) goto corrupt;
    size_t n = (size_t)(e - b) - 8;
    if (n >= sizeof s->file) n = sizeof s->file - 1;
    uint64_t pos = le64(b);
    int artificial = le32(s->h + 13) == 0 || (le16(s->h + 17) & LOG_EVENT_ARTIFICIAL_F);
    s->ev_pending = 0;
    s->n_events++;
    int changed = strlen(s->file) != n || memcmp(s->file, b + 8, n) != 0;
    memcpy(s->file, b + 8, n);
    s->file[n] = 0;
    s->pos = pos;
    new_event(L, "rotate", 3);
    set_filepos(L, s);
    if (artificial && !changed) {
      lua_pushboolean(L, 1);
      lua_setfield(L, -2, "artificial");
    }
    return 1;
  }
  case HEARTBEAT_LOG_EVENT: {
    if (have_rows(s)) return push_rows(L, s);
    body_of(s, &b, &e);
    uint32_t log_pos = le32(s->h + 13);
    if (log_pos) s->pos = log_pos;
    s->ev_pending = 0;
    s->n_events++;
    new_event(L, "heartbeat", 2);
    set_filepos(L, s);
    (void)b; (void)e;
    return 1;
  }
  case GTID_EVENT: {            /* MariaDB GTID: the start of a transaction (or a standalone DDL) */
    if (have_rows(s)) return push_rows(L, s);
    body_of(s, &b, &e);
    if (e - b < 13) goto corrupt;
    if (s->nmaps > MAP_LIMIT) maps_clear(s);
    char g[80];
    snprintf(g, sizeof g, "%u-%u-%llu", le32(b + 8), le32(s->h + 5), (unsigned long long)le64(b));
    int standalone = b[12] & FL_STANDALONE;
    consume(s);
    new_event(L, "gtid", 5);
    lua_pushstring(L, g);
    lua_setfield(L, -2, "gtid");
    set_filepos(L, s);
    set_num(L, "ts", ts);
    if (standalone) {
      lua_pushboolean(L, 1);
      lua_setfield(L, -2, "standalone");
    }
    return 1;
  }
  case GTID_LOG_EVENT: {        /* MySQL GTID: flags, 16-byte uuid, gno */
    if (have_rows(s)) return push_rows(L, s);
    body_of(s, &b, &e);
    if (e - b < 25) goto corrupt;
    if (s->nmaps > MAP_LIMIT) maps_clear(s);
    char g[80];
    const uint8_t *u = b + 1;
    snprintf(g, sizeof g, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x:%llu", u[0], u[1],
             u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15],
             (unsigned long long)le64(b + 17));
    consume(s);
    new_event(L, "gtid", 4);
    lua_pushstring(L, g);
    lua_setfield(L, -2, "gtid");
    set_filepos(L, s);
    set_num(L, "ts", ts);
    return 1;
  }
  case XID_EVENT: {
    if (have_rows(s)) return push_rows(L, s);
    body_of(s, &b, &e);
    if (e - b < 8) goto corrupt;
    uint64_t xid = le64(b);
    if (s->nmaps > MAP_LIMIT) maps_clear(s);
    consume(s);
    new_event(L, "commit", 5);
    set_filepos(L, s);
    set_num(L, "ts", ts);
    set_num(L, "xid", (double)xid);
    return 1;
  }
  case QUERY_EVENT: case QUERY_COMPRESSED_EVENT:
    if (have_rows(s)) return push_rows(L, s);
    return push_query(L, s, type == QUERY_COMPRESSED_EVENT);
  case TABLE_MAP_EVENT: {
    body_of(s, &b, &e);
    int ph = s->post_hdr[TABLE_MAP_EVENT - 1] ? s->post_hdr[TABLE_MAP_EVENT - 1] : 8;
    if (e - b < ph) goto corrupt;
    uint64_t id = ph == 6 ? le32(b) : le48(b);
    size_t rawlen = (size_t)(e - b);
    tmap *t = map_find(s, id);
    if (!t || t->rawlen != rawlen || memcmp(t->raw, b, rawlen) != 0) {
      if (t && t == s->acc_t && have_rows(s)) return push_rows(L, s);   /* re-mapped mid-batch: flush first */
      int fresh = !t;
      if (fresh) {
        t = calloc(1, sizeof *t);
        if (!t) { snprintf(s->err, ERRLEN, "out of memory"); return -1; }
      } else {
        tmap_clear(t);
      }
      t->raw = malloc(rawlen ? rawlen : 1);
      if (!t->raw || tmap_parse(s, t, b, e) != 0) {
        if (!t->raw) snprintf(s->err, ERRLEN, "out of memory");
        if (!fresh) {   /* unlink */
          tmap **pp = &s->maps[id % MAP_BUCKETS];
          while (*pp && *pp != t) pp = &(*pp)->next;
          if (*pp) *pp = t->next;
          s->nmaps--;
        }
        tmap_clear(t);
        free(t);
        return -1;
      }
      memcpy(t->raw, b, rawlen);
      t->rawlen = rawlen;
      if (fresh) {
        t->next = s->maps[id % MAP_BUCKETS];
        s->maps[id % MAP_BUCKETS] = t;
        s->nmaps++;
      }
    }
    if (!t->nm->announced) {
      if (have_rows(s)) return push_rows(L, s);
      t->nm->announced = 1;
      consume(s);
      new_event(L, "table", 2);
      set_str(L, "db", t->nm->db, strlen(t->nm->db));
      set_str(L, "table", t->nm->tbl, strlen(t->nm->tbl));
      return 1;
    }
    consume(s);
    return 0;
  }
  case WRITE_ROWS_EVENT_V1: case UPDATE_ROWS_EVENT_V1: case DELETE_ROWS_EVENT_V1:
  case WRITE_ROWS_EVENT: case UPDATE_ROWS_EVENT: case DELETE_ROWS_EVENT:
  case WRITE_ROWS_COMPRESSED_EVENT_V1: case UPDATE_ROWS_COMPRESSED_EVENT_V1: case DELETE_ROWS_COMPRESSED_EVENT_V1:
  case WRITE_ROWS_COMPRESSED_EVENT: case UPDATE_ROWS_COMPRESSED_EVENT: case DELETE_ROWS_COMPRESSED_EVENT: {
    tmap *t;
    if (s->rc.active) {
      t = s->rc.t;
    } else {
      body_of(s, &b, &e);
      int v2 = type == WRITE_ROWS_EVENT || type == UPDATE_ROWS_EVENT || type == DELETE_ROWS_EVENT ||
               type == WRITE_ROWS_COMPRESSED_EVENT || type == UPDATE_ROWS_COMPRESSED_EVENT ||
               type == DELETE_ROWS_COMPRESSED_EVENT;
      int ph = s->post_hdr[type - 1] ? s->post_hdr[type - 1] : (v2 ? 10 : 8);
      if (e - b < ph) goto corrupt;
      uint64_t id = ph == 6 ? le32(b) : le48(b);
      t = map_find(s, id);
      if (!t) {
        snprintf(s->err, ERRLEN, "rows event for unknown table id %llu at %s:%llu (stream started mid-statement?)",
                 (unsigned long long)id, s->file, (unsigned long long)s->pos);
        return -1;
      }
      if (t->nm->want == 0) { consume(s); return 0; }   /* unwanted: skipped undecoded */
      int r = tmap_resolve(s, t);
      if (r < 0) return -1;
      if (r == 1) {
        if (have_rows(s)) return push_rows(L, s);
        if (s->need_sent == t->nm) {
          snprintf(s->err, ERRLEN,
                   "no column names for `%s`.`%s`: the source does not log them (binlog_row_metadata=FULL is "
                   "off) and set_schema() was not called after need_schema", t->nm->db, t->nm->tbl);
          return -1;
        }
        s->need_sent = t->nm;
        new_event(L, "need_schema", 3);
        set_str(L, "db", t->nm->db, strlen(t->nm->db));
        set_str(L, "table", t->nm->tbl, strlen(t->nm->tbl));
        set_num(L, "columns", t->ncols);
        return 1;
      }
      s->need_sent = NULL;
      if (s->acc && s->acc_t != t && have_rows(s)) return push_rows(L, s);
      if (rows_begin(s, t, type) != 0) return -1;
    }
    if (s->acc && s->acc_t != t && have_rows(s)) return push_rows(L, s);
    if (s->acc && s->acc_t != t) have_rows(s);   /* empty: dropped */
    if (!s->acc) {
      s->acc = batch_for(t);
      if (!s->acc) { snprintf(s->err, ERRLEN, "out of memory"); return -1; }
      s->acc_t = t;
    }
    s->acc_pos = le32(s->h + 13) ? le32(s->h + 13) : s->pos;
    s->acc_ts = ts;
    int r = rows_decode(s, max_rows, max_bytes);
    if (r < 0) return -1;
    if (r == 1) { consume(s); s->acc_more = 0; }
    else { s->acc_more = 1; return push_rows(L, s); }
    if (s->acc->nrows >= max_rows || mocdc_batch_bytes(s->acc) >= max_bytes) return push_rows(L, s);
    return 0;
  }
  case PARTIAL_UPDATE_ROWS_EVENT:
    snprintf(s->err, ERRLEN, "MySQL partial JSON update events (binlog_row_value_options=PARTIAL_JSON) at %s:%llu "
             "are not supported; set binlog_row_value_options='' on the source", s->file, (unsigned long long)s->pos);
    return -1;
  case INCIDENT_EVENT:
    snprintf(s->err, ERRLEN, "source %s logged an INCIDENT event at %s:%llu (changes may be missing from the "
             "binlog there); resync the tables from a new snapshot", s->where, s->file,
             (unsigned long long)s->pos);
    return -1;
  case START_ENCRYPTION_EVENT:
  default:                      /* ANNOTATE_ROWS, BINLOG_CHECKPOINT, GTID_LIST, INTVAR, RAND, USER_VAR, STOP, ... */
    consume(s);
    return 0;
  }
corrupt:
  snprintf(s->err, ERRLEN, "corrupt binlog event (type %d) at %s:%llu", type, s->file, (unsigned long long)s->pos);
  return -1;
}

/* stream:next([max_rows[, max_bytes]]) -> event | nil (EOF) | nil, msg, errno */
static int l_next(lua_State *L) {
  stream *s = check_open(L, 1);
  lua_Integer max_rows = luaL_optinteger(L, 2, 10000);
  lua_Number max_bytes = luaL_optnumber(L, 3, (lua_Number)DEFAULT_MAX_BYTES);
  if (max_rows < 1) return luaL_argerror(L, 2, "max_rows must be >= 1");
  if (max_bytes < 1) return luaL_argerror(L, 3, "max_bytes must be >= 1");
  if (s->deferred) {
    if (have_rows(s)) return push_rows(L, s);
    if (s->interrupted && mocdc_stop_requested) {
      new_event(L, "heartbeat", 2);   /* the caller stops at a safe point */
      set_filepos(L, s);
      return 1;
    }
    snprintf(s->err, ERRLEN, "%s", s->deferred);
    return push_error(L, s);
  }
  unsigned spins = 0;
  for (;;) {
    if (!s->ev_pending) {
      if (s->eof) {
        if (have_rows(s)) return push_rows(L, s);
        lua_pushnil(L);
        return 1;
      }
      if ((++spins & 1023) == 0 && mocdc_stop_requested && !s->acc) {
        new_event(L, "heartbeat", 2);   /* let the caller see the stop request */
        set_filepos(L, s);
        return 1;
      }
      int r = fetch(s);
      if (r == 0) {
        s->eof = 1;
        continue;
      }
      if (r < 0 && mocdc_stop_requested && s->deferred_errno) {
        /* SIGINT/SIGTERM interrupted the read. Over TLS, Connector/C 3.3 then fails it
         * ("Connection timed out": it waits read_timeout seconds as milliseconds, CONC
         * PR #250); a plain socket retries. Either way the stream is not needed any more:
         * report the stop like the check above; a later next() without the stop request
         * fails as a lost connection (errno 2013, retried by the caller). */
        snprintf(s->err, ERRLEN, "the binlog stream from source %s was interrupted by a signal at %s:%llu",
                 s->where, s->file, (unsigned long long)s->pos);
        s->deferred = strdup(s->err);
        s->deferred_errno = 2013;
        s->interrupted = 1;
        if (have_rows(s)) return push_rows(L, s);
        new_event(L, "heartbeat", 2);
        set_filepos(L, s);
        return 1;
      }
      if (r < 0) {
        s->deferred = strdup(s->err);
        if (have_rows(s)) return push_rows(L, s);
        return push_error(L, s);
      }
      s->ev_pending = 1;
      s->rc.active = 0;
    }
    int r = process(L, s, (size_t)max_rows, (size_t)max_bytes);
    if (r > 0) return r;
    if (r < 0) {
      /* a broken event: the stream cannot go on past it */
      s->deferred = strdup(s->err);
      s->deferred_errno = 0;
      mocdc_batch_free(s->acc);       /* rows of a half-decoded event: drop the batch */
      s->acc = NULL;
      s->acc_t = NULL;
      return push_error(L, s);
    }
  }
}

/* stream:want(db, table, bool) */
static int l_want(lua_State *L) {
  stream *s = check_open(L, 1);
  size_t dl, tl;
  const char *db = luaL_checklstring(L, 2, &dl);
  const char *tb = luaL_checklstring(L, 3, &tl);
  luaL_checkany(L, 4);
  tname *n = name_get(s, db, dl, tb, tl, 1);
  if (!n) return luaL_error(L, "out of memory");
  n->want = (int8_t)(lua_toboolean(L, 4) ? 1 : 0);
  return 0;
}

static int class_index(const char *c) {
  static const char *const names[] = {"num", "str", "bin", "bit"};
  for (int i = 0; i < 4; i++)
    if (strcmp(c, names[i]) == 0) return i;
  return -1;
}

static void read_values(lua_State *L, int idx, strlist *out, const char *what, int col) {
  if (lua_isnil(L, idx)) return;
  if (!lua_istable(L, idx)) luaL_error(L, "set_schema: column %d: %s must be an array of strings", col, what);
  int n = (int)lua_objlen(L, idx);
  out->s = calloc((size_t)(n ? n : 1), sizeof *out->s);
  out->l = calloc((size_t)(n ? n : 1), sizeof *out->l);
  if (!out->s || !out->l) luaL_error(L, "out of memory");
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, i);
    size_t l;
    const char *v = lua_tolstring(L, -1, &l);
    if (!v) luaL_error(L, "set_schema: column %d: %s[%d] is not a string", col, what, i);
    out->s[i - 1] = malloc(l + 1);
    if (!out->s[i - 1]) luaL_error(L, "out of memory");
    memcpy(out->s[i - 1], v, l);
    out->s[i - 1][l] = 0;
    out->l[i - 1] = l;
    out->n = i;
    lua_pop(L, 1);
  }
}

/* stream:set_schema(db, table, columns) — columns: array of
 * {name=, unsigned=, class=, enum_values=, set_values=, decimals=, zerofill=} */
static int l_set_schema(lua_State *L) {
  stream *s = check_open(L, 1);
  size_t dl, tl;
  const char *db = luaL_checklstring(L, 2, &dl);
  const char *tb = luaL_checklstring(L, 3, &tl);
  luaL_checktype(L, 4, LUA_TTABLE);
  int n = (int)lua_objlen(L, 4);
  tname *nm = name_get(s, db, dl, tb, tl, 1);
  if (!nm) return luaL_error(L, "out of memory");
  /* build into a temporary userdata-free array; on a raised error it leaks
   * nothing because it is attached to nm only at the end (errors come first) */
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, 4, i);
    if (!lua_istable(L, -1)) return luaL_error(L, "set_schema: column %d must be a table", i);
    lua_getfield(L, -1, "name");
    if (!lua_isstring(L, -1)) return luaL_error(L, "set_schema: column %d has no name", i);
    lua_pop(L, 1);
    lua_getfield(L, -1, "class");
    if (!lua_isnil(L, -1) && (!lua_isstring(L, -1) || class_index(lua_tostring(L, -1)) < 0))
      return luaL_error(L, "set_schema: column %d: class must be num, str, bin or bit", i);
    lua_pop(L, 2);
  }
  colspec *spec = calloc((size_t)(n ? n : 1), sizeof *spec);
  if (!spec) return luaL_error(L, "out of memory");
  spec_free(nm->spec, nm->nspec);
  nm->spec = spec;
  nm->nspec = n;
  for (int i = 1; i <= n; i++) {
    colspec *c = &spec[i - 1];
    lua_rawgeti(L, 4, i);
    int ci = lua_gettop(L);
    lua_getfield(L, ci, "name");
    c->name = strdup(lua_tostring(L, -1));
    lua_getfield(L, ci, "unsigned");
    c->uns = (int8_t)lua_toboolean(L, -1);
    lua_getfield(L, ci, "class");
    c->cls = (int8_t)(lua_isstring(L, -1) ? class_index(lua_tostring(L, -1)) : -1);
    lua_getfield(L, ci, "decimals");
    c->decimals = (int16_t)(lua_isnumber(L, -1) ? lua_tointeger(L, -1) : -1);
    if (c->decimals > 38) c->decimals = 38;
    lua_getfield(L, ci, "zerofill");
    c->zerofill = (uint16_t)(lua_isnumber(L, -1) ? lua_tointeger(L, -1) : 0);
    if (c->zerofill > 255) c->zerofill = 255;
    lua_getfield(L, ci, "charset");
    if (lua_isstring(L, -1)) c->charset = strdup(lua_tostring(L, -1));
    lua_settop(L, ci);
    lua_getfield(L, ci, "enum_values");
    read_values(L, lua_gettop(L), &c->ev, "enum_values", i);
    lua_getfield(L, ci, "set_values");
    read_values(L, lua_gettop(L), &c->sv, "set_values", i);
    lua_settop(L, ci - 1);
    if (!c->name) return luaL_error(L, "out of memory");
  }
  nm->gen++;
  nm->spec_sig = 0;
  if (s->need_sent == nm) s->need_sent = NULL;
  return 0;
}

/* stream:readable([timeout]) -> bool: would next() return without waiting for
 * the network? True when an event or rows are pending here, when libmariadb's
 * read-ahead cache holds bytes, or when the socket becomes readable within
 * timeout seconds (default 0). Lets a caller flush its sink when the source
 * goes idle instead of waiting for the next heartbeat. */
static int l_readable(lua_State *L) {
  stream *s = check_open(L, 1);
  double timeout = luaL_optnumber(L, 2, 0);
  if (s->ev_pending || s->acc || s->eof || s->deferred) {
    lua_pushboolean(L, 1);
    return 1;
  }
  MARIADB_PVIO *pvio = s->my->net.pvio;
  if (pvio && pvio->cache && pvio->cache + pvio->cache_size > pvio->cache_pos) {
    lua_pushboolean(L, 1);
    return 1;
  }
  struct pollfd pfd = {.fd = (int)mysql_get_socket(s->my), .events = POLLIN, .revents = 0};
  int ms = timeout <= 0 ? 0 : timeout > 86400 ? 86400000 : (int)(timeout * 1000);
  int r = pfd.fd >= 0 ? poll(&pfd, 1, ms) : 1;
  lua_pushboolean(L, r != 0);   /* errors: say readable, next() reports them */
  return 1;
}

static int l_position(lua_State *L) {
  stream *s = check_stream(L, 1);
  lua_pushstring(L, s->file);
  lua_pushnumber(L, (lua_Number)s->pos);
  return 2;
}

static int l_info(lua_State *L) {
  stream *s = check_stream(L, 1);
  lua_createtable(L, 0, 10);
  lua_pushstring(L, s->host); lua_setfield(L, -2, "host");
  set_num(L, "port", s->port);
  set_num(L, "server_id", s->server_id);
  lua_pushstring(L, s->server_version); lua_setfield(L, -2, "server_version");
  lua_pushstring(L, s->row_metadata); lua_setfield(L, -2, "binlog_row_metadata");
  lua_pushboolean(L, s->crc != 0); lua_setfield(L, -2, "checksum");
  lua_pushstring(L, s->file); lua_setfield(L, -2, "file");
  set_num(L, "pos", (double)s->pos);
  set_num(L, "events", (double)s->n_events);
  set_num(L, "rows", (double)s->n_rows);
  return 1;
}

static int l_close(lua_State *L) {
  stream *s = check_stream(L, 1);
  stream_close(s);
  return 0;
}

static int l_tostring(lua_State *L) {
  stream *s = check_stream(L, 1);
  if (!s->my) lua_pushstring(L, "mocdc.binlog (closed)");
  else lua_pushfstring(L, "mocdc.binlog (%s %s:%f)", s->where, s->file, (double)s->pos);
  return 1;
}

/* ------------------------------------------------------------------------- */
/* open                                                                      */

static int opt_str(lua_State *L, int t, const char *k, const char *def, char *out, size_t n) {
  lua_getfield(L, t, k);
  const char *v = lua_isnil(L, -1) ? def : lua_tostring(L, -1);
  if (!lua_isnil(L, -1) && !lua_isstring(L, -1)) luaL_error(L, "binlog.open: %s must be a string", k);
  if (v) snprintf(out, n, "%s", v); else out[0] = 0;
  lua_pop(L, 1);
  return v != NULL;
}

static double opt_num(lua_State *L, int t, const char *k, double def) {
  lua_getfield(L, t, k);
  double v = def;
  if (!lua_isnil(L, -1)) {
    if (!lua_isnumber(L, -1)) luaL_error(L, "binlog.open: %s must be a number", k);
    v = lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
  return v;
}

/* one-row query; returns MYSQL_RES (caller frees) or NULL */
static MYSQL_RES *query1(MYSQL *my, const char *sql) {
  if (mysql_query(my, sql) != 0) return NULL;
  return mysql_store_result(my);
}

static int open_fail(lua_State *L, stream *s, const char *msg, unsigned err) {
  char buf[ERRLEN];
  snprintf(buf, sizeof buf, "%s", msg);
  stream_close(s);
  lua_pop(L, 1);     /* the userdata */
  return mocdc_push_fail(L, buf, (int)err, NULL);
}

/* open{<the connect fields of connopts.h>, server_id, file, pos, gtid, heartbeat, blocking} */
static int l_open(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  mocdc_connopts co;
  mocdc_connopts_read(L, 1, "binlog.open", &co);
  if (!co.host) co.host = "127.0.0.1";
  if (!co.user) co.user = "root";
  if (!co.unix_socket) /* the defaults above, in messages too */
    snprintf(co.who, sizeof co.who, "%s@%s:%ld", co.user, co.host, co.port);
  char file[256], gtid[1024];
  int has_file = opt_str(L, 1, "file", NULL, file, sizeof file);
  int has_gtid = opt_str(L, 1, "gtid", NULL, gtid, sizeof gtid);
  double server_id = opt_num(L, 1, "server_id", 0);
  double pos = opt_num(L, 1, "pos", 4);
  double heartbeat = opt_num(L, 1, "heartbeat", 1);
  /* an idle source sends a heartbeat every `heartbeat` s: a read timeout must outlast two */
  long hb_floor = heartbeat > 0 ? (long)(heartbeat * 2) + 1 : 0;
  if (co.connect_timeout <= 0) co.connect_timeout = 10;
  if (co.read_timeout <= 0) co.read_timeout = heartbeat > 0 ? (heartbeat * 3 < 30 ? 30 : (long)(heartbeat * 3)) : 0;
  else if (co.read_timeout < hb_floor) co.read_timeout = hb_floor;
  lua_getfield(L, 1, "blocking");
  int blocking = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (server_id < 1 || server_id > 4294967295.0)
    return luaL_error(L, "binlog.open: server_id must be a number in 1..4294967295, unique among the source's "
                         "replicas");
  if (co.port < 1 || co.port > 65535) return luaL_error(L, "binlog.open: port must be in 1..65535");
  if (pos < 4) pos = 4;
  const char *host = co.unix_socket ? co.unix_socket : co.host;
  const char *user = co.user;
  char where[300]; /* host:port or the socket, in messages */
  if (co.unix_socket) snprintf(where, sizeof where, "%s", co.unix_socket);
  else snprintf(where, sizeof where, "%s:%ld", co.host, co.port);

  stream *s = lua_newuserdata(L, sizeof *s);
  memset(s, 0, sizeof *s);
  luaL_getmetatable(L, BINLOG_MT);
  lua_setmetatable(L, -2);
  snprintf(s->host, sizeof s->host, "%s", host);
  snprintf(s->where, sizeof s->where, "%s", where);
  snprintf(s->user, sizeof s->user, "%s", user);
  s->port = (unsigned)co.port;
  s->server_id = (uint32_t)server_id;
  s->blocking = blocking;
  char msg[ERRLEN];

  s->my = mocdc_connopts_init(&co);
  if (!s->my) return open_fail(L, s, "out of memory", 0);
  char why[1200];
  unsigned cerr = mocdc_connect(s->my, &co, why, sizeof why);
  if (cerr) {
    snprintf(msg, sizeof msg, "cannot connect to binlog source %s: %s", co.who, why);
    return open_fail(L, s, msg, cerr);
  }

  /* the source must write full row images */
  MYSQL_RES *res = query1(s->my, "SELECT @@global.log_bin, @@global.binlog_format, @@global.binlog_row_image, "
                                 "@@global.binlog_checksum, @@global.server_id, @@version");
  MYSQL_ROW row = res ? mysql_fetch_row(res) : NULL;
  if (!row) {
    snprintf(msg, sizeof msg, "cannot read the binlog settings of source %s: %s", where,
             mysql_error(s->my));
    if (res) mysql_free_result(res);
    return open_fail(L, s, msg, mysql_errno(s->my));
  }
  const char *log_bin = row[0] ? row[0] : "0", *fmt = row[1] ? row[1] : "", *image = row[2] ? row[2] : "";
  const char *checksum = row[3] ? row[3] : "NONE";
  unsigned src_id = row[4] ? (unsigned)strtoul(row[4], NULL, 10) : 0;
  snprintf(s->server_version, sizeof s->server_version, "%s", row[5] ? row[5] : "");
  s->mariadb = strstr(s->server_version, "MariaDB") != NULL;
  msg[0] = 0;
  if (strcmp(log_bin, "1") != 0 && strcasecmp(log_bin, "ON") != 0)
    snprintf(msg, sizeof msg, "source %s has log_bin=OFF; mocdc needs the binary log (log_bin=ON, "
             "binlog_format=ROW and binlog_row_image=FULL in my.cnf, then restart the server)", where);
  else if (strcasecmp(fmt, "ROW") != 0)
    snprintf(msg, sizeof msg, "source %s has binlog_format=%s; mocdc needs binlog_format=ROW "
             "(SET GLOBAL binlog_format=ROW, or binlog_format=ROW in my.cnf)", where, fmt);
  else if (strcasecmp(image, "FULL") != 0)
    snprintf(msg, sizeof msg, "source %s has binlog_row_image=%s; mocdc needs binlog_row_image=FULL "
             "(SET GLOBAL binlog_row_image=FULL, or binlog_row_image=FULL in my.cnf)", where, image);
  else if (src_id == (unsigned)server_id)
    snprintf(msg, sizeof msg, "server_id %u is the server_id of source %s itself; pick another server_id for "
             "mocdc (unique among the source's replicas)", src_id, where);
  s->crc = strcasecmp(checksum, "NONE") != 0 && strcmp(checksum, "0") != 0 ? 4 : 0;
  mysql_free_result(res);
  if (msg[0]) return open_fail(L, s, msg, 0);

  res = query1(s->my, "SELECT @@global.binlog_row_metadata");
  if (res) {
    row = mysql_fetch_row(res);
    if (row && row[0]) snprintf(s->row_metadata, sizeof s->row_metadata, "%s", row[0]);
    mysql_free_result(res);
  }

  if (!has_file && !has_gtid) {      /* start from the source's current position */
    res = query1(s->my, "SHOW MASTER STATUS");
    row = res ? mysql_fetch_row(res) : NULL;
    if (!row || !row[0]) {
      unsigned e = mysql_errno(s->my);
      if (e == 1227)
        snprintf(msg, sizeof msg, "user '%s' may not read the binlog position of source %s: %s " GRANT_HINT,
                 user, where, mysql_error(s->my));
      else
        snprintf(msg, sizeof msg, "cannot read the current binlog position of source %s (SHOW MASTER STATUS): %s",
                 where, e ? mysql_error(s->my) : "no binlog");
      if (res) mysql_free_result(res);
      return open_fail(L, s, msg, mysql_errno(s->my));
    }
    snprintf(file, sizeof file, "%s", row[0]);
    pos = row[1] ? strtod(row[1], NULL) : 4;
    mysql_free_result(res);
  } else if (has_file) {              /* is the file still there? */
    res = query1(s->my, "SHOW BINARY LOGS");
    if (res) {
      int found = 0;
      char first[512] = "";
      unsigned long long size = 0;
      while ((row = mysql_fetch_row(res))) {
        if (!first[0] && row[0]) snprintf(first, sizeof first, "%s", row[0]);
        if (row[0] && strcmp(row[0], file) == 0) {
          found = 1;
          size = row[1] ? strtoull(row[1], NULL, 10) : 0;
        }
      }
      mysql_free_result(res);
      if (!found) {
        snprintf(msg, sizeof msg,
                 "binlog file '%s' is no longer on source %s (purged; the oldest binlog there is '%s'): the "
                 "saved position %s:%.0f cannot be resumed; start over from a new snapshot",
                 file, where, first[0] ? first : "none", file, pos);
        return open_fail(L, s, msg, 1236);
      }
      if (size && pos > (double)size) {
        snprintf(msg, sizeof msg, "position %.0f is past the end of binlog file '%s' on source %s (%llu bytes)",
                 pos, file, where, size);
        return open_fail(L, s, msg, 1236);
      }
    }
  }

  char sql[4400];
  snprintf(sql, sizeof sql, "SET @master_binlog_checksum = @@global.binlog_checksum, @mariadb_slave_capability = 4"
           ", @master_heartbeat_period = %.0f", heartbeat > 0 ? heartbeat * 1e9 : 0);
  if (mysql_query(s->my, sql) != 0) {
    snprintf(msg, sizeof msg, "cannot prepare the binlog stream on source %s: %s", where,
             mysql_error(s->my));
    return open_fail(L, s, msg, mysql_errno(s->my));
  }
  if (has_gtid) {
    char esc[2100];
    mysql_real_escape_string(s->my, esc, gtid, (unsigned long)strlen(gtid));
    snprintf(sql, sizeof sql, "SET @slave_connect_state = '%s', @slave_gtid_strict_mode = 0, "
             "@slave_gtid_ignore_duplicates = 0", esc);
    if (mysql_query(s->my, sql) != 0) {
      snprintf(msg, sizeof msg, "cannot set the GTID start position on source %s: %s", where,
               mysql_error(s->my));
      return open_fail(L, s, msg, mysql_errno(s->my));
    }
    file[0] = 0;
    pos = 4;
  }

  snprintf(s->file, sizeof s->file, "%s", file);
  s->pos = (uint64_t)pos;
  s->rpl = mariadb_rpl_init(s->my);
  if (!s->rpl) return open_fail(L, s, "out of memory", 0);
  mariadb_rpl_optionsv(s->rpl, MARIADB_RPL_FILENAME, file, strlen(file));
  mariadb_rpl_optionsv(s->rpl, MARIADB_RPL_START, (unsigned long)pos);
  mariadb_rpl_optionsv(s->rpl, MARIADB_RPL_SERVER_ID, (unsigned int)server_id);
  /* a report host makes libmariadb register the replica (COM_REGISTER_SLAVE): the source's
   * SHOW SLAVE HOSTS lists mocdc with its server_id, as it lists any replica */
  mariadb_rpl_optionsv(s->rpl, MARIADB_RPL_HOST, "mocdc", (size_t)5);
  mariadb_rpl_optionsv(s->rpl, MARIADB_RPL_FLAGS, (unsigned int)(blocking ? 0 : MARIADB_RPL_BINLOG_DUMP_NON_BLOCK));
  if (mariadb_rpl_open(s->rpl) != 0) {
    const char *em = mysql_error(s->my);
    /* Connector/C reports a refused COM_REGISTER_SLAVE with the errno but a generic text */
    if ((mysql_errno(s->my) == 1227 || mysql_errno(s->my) == 1045) && strstr(em, "Unknown or undefined error"))
      em = "Access denied; you need the REPLICATION SLAVE privilege to register as a replica";
    fetch_error(s, mysql_errno(s->my), em);
    snprintf(msg, sizeof msg, "%s", s->err);
    return open_fail(L, s, msg, mysql_errno(s->my));
  }
  return 1;
}

/* ------------------------------------------------------------------------- */
/* decode_value(type, meta, bytes[, unsigned[, values]]) -> text | nil
 * One value as the stream would decode it (for specs and debugging). */
static int l_decode_value(lua_State *L) {
  int type = (int)luaL_checkinteger(L, 1);
  int meta = (int)luaL_checkinteger(L, 2);
  size_t n;
  const char *bytes = luaL_checklstring(L, 3, &n);
  bcol c;
  memset(&c, 0, sizeof c);
  col_setup(&c, (uint8_t)type, (uint16_t)meta);
  c.uns = (uint8_t)lua_toboolean(L, 4);
  c.decimals = -1;
  strlist vals = {0, NULL, NULL};
  if (lua_istable(L, 5)) {
    int k = (int)lua_objlen(L, 5);
    vals.s = calloc((size_t)k + 1, sizeof *vals.s);
    vals.l = calloc((size_t)k + 1, sizeof *vals.l);
    for (int i = 1; vals.s && vals.l && i <= k; i++) {
      lua_rawgeti(L, 5, i);
      size_t l;
      const char *v = lua_tolstring(L, -1, &l);
      vals.s[i - 1] = strdup(v ? v : "");
      vals.l[i - 1] = v ? l : 0;
      vals.n = i;
      lua_pop(L, 1);
    }
    c.vals = &vals;
  }
  c.binary = (uint8_t)lua_toboolean(L, 6);
  c.cls = (uint8_t)type_class(&c);
  mocdc_buf sb = {NULL, 0, 0};
  vref v;
  long r = decode_value(&c, (const uint8_t *)bytes, (const uint8_t *)bytes + n, &sb, &v);
  if (r < 0) {
    lua_pushnil(L);
    lua_pushstring(L, r == DEC_TRUNC ? "truncated value" : "unsupported type");
  } else {
    if (v.soff >= 0) lua_pushlstring(L, sb.p + v.soff, v.len);
    else lua_pushlstring(L, v.p, v.len);
    lua_pushinteger(L, r);
  }
  mocdc_buf_free(&sb);
  strlist_free(&vals);
  return 2;
}

/* format_real(x, is_float) -> text as the server's text protocol writes FLOAT/DOUBLE */
static int l_format_real(lua_State *L) {
  double x = luaL_checknumber(L, 1);
  int is_float = lua_toboolean(L, 2);
  char buf[80];
  size_t n = fmt_real(is_float ? (double)(float)x : x, is_float, buf);
  lua_pushlstring(L, buf, n);
  return 1;
}

int luaopen_mocdc_binlog_lib(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"next", l_next}, {"want", l_want}, {"set_schema", l_set_schema}, {"position", l_position},
      {"info", l_info}, {"readable", l_readable}, {"close", l_close}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {
      {"open", l_open}, {"decode_value", l_decode_value}, {"format_real", l_format_real}, {NULL, NULL}};
  mocdc_class(L, BINLOG_MT, methods, l_close, l_tostring);
  lua_newtable(L);
  luaL_register(L, NULL, funcs);
  return 1;
}
