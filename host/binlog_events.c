/* mocdc.binlog.lib: the events. libmariadb's replication API (mariadb_rpl_open/fetch)
 * carries the COM_BINLOG_DUMP stream and the event framing; every event body is parsed
 * here from the raw packet (the library misparses ROTATE; spec/PEERS.md). process()
 * hands each event to its handler (sql/log_event*.cc). */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "binlog_internal.h"

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
int bl_uncompress(const uint8_t *src, size_t n, mocdc_buf *out, char *err) {
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

/* Mark the current event consumed and advance the position. */
void bl_consume(stream *s) {
  uint32_t log_pos = le32(s->h + 13);
  if (log_pos) s->pos = log_pos;
  s->ev_pending = 0;
  s->rc.active = 0;
  s->n_events++;
}

/* Turn a fetch failure into one clear message. */
void bl_fetch_error(stream *s, unsigned err, const char *msg) {
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
int bl_fetch(stream *s) {
  s->deferred_errno = 0;
  MARIADB_RPL_EVENT *ev = mariadb_rpl_fetch(s->rpl, s->ev);
  if (!ev) {
    s->ev = NULL;   /* the library frees the event it was given when it returns NULL */
    unsigned err = mysql_errno(s->my);
    const char *msg = mysql_error(s->my);
    if (!err) { err = mariadb_rpl_errno(s->rpl); msg = mariadb_rpl_error(s->rpl); }
    if (!err) return 0;
    bl_fetch_error(s, err, msg);
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
void bl_body_of(stream *s, const uint8_t **b, const uint8_t **e) {
  *b = s->h + HDR_LEN;
  size_t blen = s->evlen - HDR_LEN;
  if (s->h[4] != FORMAT_DESCRIPTION_EVENT && blen >= (size_t)s->crc) blen -= (size_t)s->crc;
  *e = *b + blen;
}

static int starts_with_word(const char *q, size_t n, const char *w) {
  size_t i = 0, wl = strlen(w);
  while (i < n && (q[i] == ' ' || q[i] == '\t' || q[i] == '\n' || q[i] == '\r')) i++;
  if (n - i < wl || strncasecmp(q + i, w, wl) != 0) return 0;
  return n - i == wl || !((q[i + wl] >= 'A' && q[i + wl] <= 'Z') || (q[i + wl] >= 'a' && q[i + wl] <= 'z') ||
                          q[i + wl] == '_');
}

/* QUERY / QUERY_COMPRESSED -> begin / commit / rollback / statement / ddl. */
static int ev_query(lua_State *L, stream *s, int compressed) {
  const uint8_t *b, *e;
  if (bl_have_rows(s)) return bl_push_rows(L, s);
  bl_body_of(s, &b, &e);
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
    if (bl_uncompress(p, qn, &s->ubuf, s->err) != 0) return -1;
    q = s->ubuf.p;
    qn = s->ubuf.len;
  }
  uint32_t ts = le32(s->h);
  bl_consume(s);
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

int bl_corrupt(stream *s) {
  snprintf(s->err, ERRLEN, "corrupt binlog event (type %d) at %s:%llu", s->h[4], s->file, (unsigned long long)s->pos);
  return -1;
}

/* FORMAT_DESCRIPTION: post-header lengths, checksums, the server version. */
static int ev_format_description(stream *s) {
  const uint8_t *b = s->h + HDR_LEN, *e = s->h + s->evlen;
  if (e - b < 57 + 5) return bl_corrupt(s);
  memset(s->post_hdr, 0, sizeof s->post_hdr);
  size_t n = (size_t)(e - b) - 57 - 5;
  if (n > sizeof s->post_hdr) n = sizeof s->post_hdr;
  memcpy(s->post_hdr, b + 57, n);
  s->crc = e[-5] ? 4 : 0;
  snprintf(s->server_version, sizeof s->server_version, "%.*s", (int)strnlen((const char *)b + 2, 50),
           (const char *)b + 2);
  s->mariadb = strstr(s->server_version, "MariaDB") != NULL;
  bl_consume(s);
  return 0;
}

/* ROTATE: the next file and position (artificial = the one the source sends at connect). */
static int ev_rotate(lua_State *L, stream *s) {
  const uint8_t *b, *e;
  if (bl_have_rows(s)) return bl_push_rows(L, s);
  bl_body_of(s, &b, &e);
  if (e - b < 8) return bl_corrupt(s);
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

static int ev_heartbeat(lua_State *L, stream *s) {
  if (bl_have_rows(s)) return bl_push_rows(L, s);
  bl_consume(s);
  new_event(L, "heartbeat", 2);
  set_filepos(L, s);
  return 1;
}

static int push_gtid(lua_State *L, stream *s, const char *g, uint32_t ts, int standalone) {
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

/* MariaDB GTID: the start of a transaction (or a standalone DDL). */
static int ev_gtid_mariadb(lua_State *L, stream *s) {
  const uint8_t *b, *e;
  if (bl_have_rows(s)) return bl_push_rows(L, s);
  bl_body_of(s, &b, &e);
  if (e - b < 13) return bl_corrupt(s);
  if (s->nmaps > MAP_LIMIT) bl_maps_clear(s);
  char g[80];
  snprintf(g, sizeof g, "%u-%u-%llu", le32(b + 8), le32(s->h + 5), (unsigned long long)le64(b));
  int standalone = b[12] & FL_STANDALONE;
  uint32_t ts = le32(s->h);
  bl_consume(s);
  return push_gtid(L, s, g, ts, standalone);
}

/* MySQL GTID: flags, 16-byte uuid, gno. */
static int ev_gtid_mysql(lua_State *L, stream *s) {
  const uint8_t *b, *e;
  if (bl_have_rows(s)) return bl_push_rows(L, s);
  bl_body_of(s, &b, &e);
  if (e - b < 25) return bl_corrupt(s);
  if (s->nmaps > MAP_LIMIT) bl_maps_clear(s);
  char g[80];
  const uint8_t *u = b + 1;
  snprintf(g, sizeof g, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x:%llu", u[0], u[1],
           u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15],
           (unsigned long long)le64(b + 17));
  uint32_t ts = le32(s->h);
  bl_consume(s);
  return push_gtid(L, s, g, ts, 0);
}

/* XID: the commit of a transaction. */
static int ev_xid(lua_State *L, stream *s) {
  const uint8_t *b, *e;
  if (bl_have_rows(s)) return bl_push_rows(L, s);
  bl_body_of(s, &b, &e);
  if (e - b < 8) return bl_corrupt(s);
  uint64_t xid = le64(b);
  uint32_t ts = le32(s->h);
  if (s->nmaps > MAP_LIMIT) bl_maps_clear(s);
  bl_consume(s);
  new_event(L, "commit", 5);
  set_filepos(L, s);
  set_num(L, "ts", ts);
  set_num(L, "xid", (double)xid);
  return 1;
}

/* Process the pending event: its handler. Returns >0 results pushed, 0 continue, -1 error. */
int bl_process(lua_State *L, stream *s, size_t max_rows, size_t max_bytes) {
  int type = s->h[4];
  switch (type) {
  case FORMAT_DESCRIPTION_EVENT: return ev_format_description(s);
  case ROTATE_EVENT: return ev_rotate(L, s);
  case HEARTBEAT_LOG_EVENT: return ev_heartbeat(L, s);
  case GTID_EVENT: return ev_gtid_mariadb(L, s);
  case GTID_LOG_EVENT: return ev_gtid_mysql(L, s);
  case XID_EVENT: return ev_xid(L, s);
  case QUERY_EVENT: case QUERY_COMPRESSED_EVENT: return ev_query(L, s, type == QUERY_COMPRESSED_EVENT);
  case TABLE_MAP_EVENT: return bl_ev_table_map(L, s);
  case WRITE_ROWS_EVENT_V1: case UPDATE_ROWS_EVENT_V1: case DELETE_ROWS_EVENT_V1:
  case WRITE_ROWS_EVENT: case UPDATE_ROWS_EVENT: case DELETE_ROWS_EVENT:
  case WRITE_ROWS_COMPRESSED_EVENT_V1: case UPDATE_ROWS_COMPRESSED_EVENT_V1: case DELETE_ROWS_COMPRESSED_EVENT_V1:
  case WRITE_ROWS_COMPRESSED_EVENT: case UPDATE_ROWS_COMPRESSED_EVENT: case DELETE_ROWS_COMPRESSED_EVENT:
    return bl_ev_rows(L, s, type, max_rows, max_bytes);
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
    bl_consume(s);
    return 0;
  }
}
