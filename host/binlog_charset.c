/* mocdc.binlog.lib: character sets. Text columns are handed out in utf8mb4, as a
 * utf8mb4 connection SELECTs them (the binlog holds them in the column's charset). */
#include <errno.h>
#include <iconv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "binlog_internal.h"

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
int bl_charset_is_utf8(const char *cs) {
  return !cs || !*cs || strcmp(cs, "utf8mb4") == 0 || strcmp(cs, "utf8mb3") == 0 || strcmp(cs, "utf8") == 0 ||
         strcmp(cs, "ascii") == 0 || strcmp(cs, "binary") == 0;
}

/* Convert n bytes of text to UTF-8 at the end of sb; *outlen = bytes written.
 * Bytes the charset cannot map become '?', as the server writes them. */
int bl_conv_run(const conv *cv, const char *in, size_t n, mocdc_buf *sb, size_t *outlen) {
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

/* The converter of a charset to utf8mb4 (cached per stream), or NULL. */
const conv *bl_conv_get(stream *s, const char *csname, const char *enc) {
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
int bl_convert_list(const conv *cv, const strlist *in, strlist *out) {
  mocdc_buf b = {NULL, 0, 0};
  out->s = calloc((size_t)in->n + 1, sizeof *out->s);
  out->l = calloc((size_t)in->n + 1, sizeof *out->l);
  if (!out->s || !out->l) return -1;
  for (int i = 0; i < in->n; i++) {
    size_t n;
    b.len = 0;
    if (bl_conv_run(cv, in->s[i], in->l[i], &b, &n) != 0 || !(out->s[i] = malloc(n + 1))) {
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

/* Close the stream's converters. */
void bl_convs_close(stream *s) {
  for (int i = 0; i < s->nconvs; i++)
    if (s->convs[i].kind == CONV_ICONV) iconv_close(s->convs[i].cd);
  s->nconvs = 0;
}
