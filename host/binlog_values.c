/* mocdc.binlog.lib: one column value of each MySQL type, decoded from a row image
 * into MySQL text-protocol form (what SELECT returns; sql/rpl_utility.cc, sql/field.cc). */
#include <stdio.h>
#include <string.h>
#include "binlog_internal.h"

/* Fill type/meta/maxlen of a column from its raw table-map type and metadata. */
void bl_col_setup(bcol *c, uint8_t type, uint16_t meta) {
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

int bl_type_class(const bcol *c) {
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

const char *bl_type_name(uint8_t t) {
  switch (t) {
  case T_JSON: return "MySQL's binary JSON";
  case T_VARCHAR_COMPRESSED: return "VARCHAR COMPRESSED";
  case T_BLOB_COMPRESSED: return "BLOB COMPRESSED";
  case MYSQL_TYPE_DECIMAL: return "old DECIMAL (MySQL 4)";
  case MYSQL_TYPE_VAR_STRING: return "old VAR_STRING";
  default: return "unknown";
  }
}

static int frac_bytes(int fsp) { return (fsp + 1) / 2; }

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
  if (bl_conv_run(c->cv, in, n, sb, &out) != 0) return -1;
  v->p = NULL;
  v->len = out;
  v->soff = (long)sb->len;
  sb->len += out;
  return 0;
}

/* Decode one non-NULL value of column c at p. On success returns the number of
 * bytes consumed and sets *v (pointing into the event or at a scratch offset).
 * ~190 lines: one case per binlog type on the per-value hot path, kept one switch (one jump table). */
long bl_decode_value(const bcol *c, const uint8_t *p, const uint8_t *end, mocdc_buf *sb, vref *v) {
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
    else n = bl_fmt_real((double)f, 0, o);
    used = 4; break;
  }
  case MYSQL_TYPE_DOUBLE: {
    NEED(8); OUT_SCRATCH(400 + c->zerofill);
    double d;
    uint64_t u = le64(p);
    memcpy(&d, &u, 8);
    if (c->decimals >= 0) n = (size_t)snprintf(o, 400, "%.*f", c->decimals, d);
    else n = bl_fmt_real(d, 0, o);
    used = 8; break;
  }
  case MYSQL_TYPE_NEWDECIMAL: {
    int prec = c->meta >> 8, scale = c->meta & 0xFF;
    if (prec < 1 || prec > 65 || scale > 38 || scale > prec) return DEC_UNSUPPORTED;
    int size = bl_decimal_size(prec, scale);
    NEED(size); OUT_SCRATCH(96 + c->zerofill);
    n = bl_fmt_decimal(p, prec, scale, o);
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
    n = bl_fmt_hms(o, neg, (unsigned)(t / 10000), (unsigned)(t % 10000 / 100), (unsigned)(t % 100));
    used = 3; break;
  }
  case MYSQL_TYPE_TIME2:
    fsp = c->meta > 6 ? 6 : c->meta;
    NEED(3 + frac_bytes(fsp)); OUT_SCRATCH(24);
    n = bl_fmt_time2(p, fsp, o);
    used = 3 + frac_bytes(fsp); break;
  case MYSQL_TYPE_DATETIME: {        /* pre-5.6 DATETIME: YYYYMMDDhhmmss as an 8-byte integer */
    NEED(8); OUT_SCRATCH(32);
    uint64_t x = le64(p), d = x / 1000000, t = x % 1000000;
    n = bl_fmt_ymd_hms(o, (unsigned)(d / 10000), (unsigned)(d % 10000 / 100), (unsigned)(d % 100),
                    (unsigned)(t / 10000), (unsigned)(t % 10000 / 100), (unsigned)(t % 100));
    used = 8; break;
  }
  case MYSQL_TYPE_DATETIME2:
    fsp = c->meta > 6 ? 6 : c->meta;
    NEED(5 + frac_bytes(fsp)); OUT_SCRATCH(32);
    n = bl_fmt_datetime2(p, fsp, o);
    used = 5 + frac_bytes(fsp); break;
  case MYSQL_TYPE_TIMESTAMP:
    NEED(4); OUT_SCRATCH(32);
    n = bl_fmt_timestamp(le32(p), 0, 0, o);
    used = 4; break;
  case MYSQL_TYPE_TIMESTAMP2:
    fsp = c->meta > 6 ? 6 : c->meta;
    NEED(4 + frac_bytes(fsp)); OUT_SCRATCH(32);
    n = bl_fmt_timestamp((uint32_t)be_n(p, 4), bl_read_frac(p + 4, fsp), fsp, o);
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
