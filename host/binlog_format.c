/* mocdc.binlog.lib: the text forms of FLOAT/DOUBLE, DECIMAL and the temporal types,
 * byte-identical to what a utf8mb4 connection SELECTs (time_zone '+00:00').
 * Formats: strings/decimal.c, sql-common/my_time.c, strings/dtoa.c (my_gcvt). */
#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "binlog_internal.h"

/* The digits and decimal point of a "%.*e" text, trailing zeros dropped. */
static int e_digits(const char *tmp, char *dig, int *decpt) {
  int n = 0;
  const char *p = tmp;
  for (; *p && *p != 'e'; p++)
    if (*p >= '0' && *p <= '9') dig[n++] = *p;
  *decpt = atoi(p + 1) + 1;
  while (n > 1 && dig[n - 1] == '0') n--;
  return n;
}

/* Digits of x > 0 rounded to ndig significant digits, trailing zeros dropped. */
static int real_digits(double x, int ndig, char *dig, int *decpt) {
  char tmp[64];
  snprintf(tmp, sizeof tmp, "%.*e", ndig - 1, x);
  return e_digits(tmp, dig, decpt);
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
    if (strtod(tmp, NULL) == x) return e_digits(tmp, dig, decpt);
  }
  return real_digits(x, 17, dig, decpt);
}

/* FLOAT/DOUBLE as the server's text protocol writes them: my_gcvt() with the
 * 69-character width of Field_float/Field_double::val_str (FLOAT: 6 significant
 * digits, DOUBLE: shortest round trip; 'e' format past 15 digits of magnitude).
 * Verified against SELECT over 20k random values. */
size_t bl_fmt_real(double x, int is_float, char *to) {
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

int bl_decimal_size(int prec, int scale) {
  int intg = prec - scale;
  return (intg / 9) * 4 + dig2bytes[intg % 9] + (scale / 9) * 4 + dig2bytes[scale % 9];
}

/* Binary DECIMAL (strings/decimal.c bin2decimal) to text with all `scale` digits. */
size_t bl_fmt_decimal(const uint8_t *src, int prec, int scale, char *out) {
  uint8_t b[40];
  int size = bl_decimal_size(prec, scale);
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

size_t bl_fmt_ymd_hms(char *o, unsigned y, unsigned mo, unsigned d, unsigned h, unsigned mi, unsigned s) {
  fmt_pad(o, y % 10000, 4); o[4] = '-';
  fmt_pad(o + 5, mo % 100, 2); o[7] = '-';
  fmt_pad(o + 8, d % 100, 2); o[10] = ' ';
  fmt_pad(o + 11, h % 100, 2); o[13] = ':';
  fmt_pad(o + 14, mi % 100, 2); o[16] = ':';
  fmt_pad(o + 17, s % 100, 2);
  return 19;
}

size_t bl_fmt_hms(char *o, int neg, unsigned h, unsigned mi, unsigned s) {
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

/* fraction of DATETIME2/TIMESTAMP2 in microseconds */
uint32_t bl_read_frac(const uint8_t *p, int fsp) {
  switch (fsp) {
  case 1: case 2: return (uint32_t)p[0] * 10000;
  case 3: case 4: return (uint32_t)be_n(p, 2) * 100;
  case 5: case 6: return (uint32_t)be_n(p, 3);
  default: return 0;
  }
}

size_t bl_fmt_time2(const uint8_t *p, int fsp, char *o) {
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
  size_t n = bl_fmt_hms(o, neg, (unsigned)((hms >> 12) % 1024), (unsigned)((hms >> 6) % 64), (unsigned)(hms % 64));
  return n + fmt_frac(o + n, usec, fsp);
}

size_t bl_fmt_datetime2(const uint8_t *p, int fsp, char *o) {
  int64_t ymdhms = (int64_t)be_n(p, 5) - INT64_C(0x8000000000);
  if (ymdhms < 0) ymdhms = -ymdhms;
  int64_t ymd = ymdhms >> 17, ym = ymd >> 5, hms = ymdhms % (1 << 17);
  size_t n = bl_fmt_ymd_hms(o, (unsigned)(ym / 13), (unsigned)(ym % 13), (unsigned)(ymd % 32),
                         (unsigned)(hms >> 12), (unsigned)((hms >> 6) % 64), (unsigned)(hms % 64));
  return n + fmt_frac(o + n, bl_read_frac(p + 5, fsp), fsp);
}

size_t bl_fmt_timestamp(uint32_t sec, uint32_t usec, int fsp, char *o) {
  size_t n;
  if (sec == 0 && usec == 0) {
    n = bl_fmt_ymd_hms(o, 0, 0, 0, 0, 0, 0);
  } else {
    time_t t = (time_t)sec;
    struct tm tm;
    gmtime_r(&t, &tm);
    n = bl_fmt_ymd_hms(o, (unsigned)tm.tm_year + 1900, (unsigned)tm.tm_mon + 1, (unsigned)tm.tm_mday,
                    (unsigned)tm.tm_hour, (unsigned)tm.tm_min, (unsigned)tm.tm_sec);
  }
  return n + fmt_frac(o + n, usec, fsp);
}
