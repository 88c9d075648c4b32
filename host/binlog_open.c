/* mocdc.binlog.lib: binlog.open{}. Connects through the shared opener (connopts.c),
 * checks that the source writes full row images, picks the start position and starts
 * COM_BINLOG_DUMP as a registered replica. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "binlog_internal.h"
#include "connopts.h"

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
  bl_stream_close(s);
  lua_pop(L, 1);     /* the userdata */
  return mocdc_push_fail(L, buf, (int)err, NULL);
}

/* What binlog.open{} was asked for. */
typedef struct {
  mocdc_connopts co;           /* its strings point into the options table (argument 1) */
  char file[256], gtid[1024];
  int has_file, has_gtid, blocking;
  double server_id, pos, heartbeat;
  char where[300];             /* host:port or the socket, in messages */
} open_req;

/* Read and check the options table; misuse raises. */
static void read_request(lua_State *L, open_req *r) {
  mocdc_connopts *co = &r->co;
  mocdc_connopts_read(L, 1, "binlog.open", co);
  if (!co->host) co->host = "127.0.0.1";
  if (!co->user) co->user = "root";
  if (!co->unix_socket) /* the defaults above, in messages too */
    snprintf(co->who, sizeof co->who, "%s@%s:%ld", co->user, co->host, co->port);
  r->has_file = opt_str(L, 1, "file", NULL, r->file, sizeof r->file);
  r->has_gtid = opt_str(L, 1, "gtid", NULL, r->gtid, sizeof r->gtid);
  r->server_id = opt_num(L, 1, "server_id", 0);
  r->pos = opt_num(L, 1, "pos", 4);
  r->heartbeat = opt_num(L, 1, "heartbeat", 1);
  /* an idle source sends a heartbeat every `heartbeat` s: a read timeout must outlast two */
  double heartbeat = r->heartbeat;
  long hb_floor = heartbeat > 0 ? (long)(heartbeat * 2) + 1 : 0;
  if (co->connect_timeout <= 0) co->connect_timeout = 10;
  if (co->read_timeout <= 0) co->read_timeout = heartbeat > 0 ? (heartbeat * 3 < 30 ? 30 : (long)(heartbeat * 3)) : 0;
  else if (co->read_timeout < hb_floor) co->read_timeout = hb_floor;
  lua_getfield(L, 1, "blocking");
  r->blocking = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
  lua_pop(L, 1);
  if (r->server_id < 1 || r->server_id > 4294967295.0)
    luaL_error(L, "binlog.open: server_id must be a number in 1..4294967295, unique among the source's replicas");
  if (co->port < 1 || co->port > 65535) luaL_error(L, "binlog.open: port must be in 1..65535");
  if (r->pos < 4) r->pos = 4;
  if (co->unix_socket) snprintf(r->where, sizeof r->where, "%s", co->unix_socket);
  else snprintf(r->where, sizeof r->where, "%s:%ld", co->host, co->port);
}

/* The source must write full row images, and not be mocdc's server_id. 0, or -1 with
 * msg (ERRLEN bytes) and *err set. */
static int check_source(stream *s, const open_req *r, char *msg, unsigned *err) {
  const char *where = r->where;
  MYSQL_RES *res = query1(s->my, "SELECT @@global.log_bin, @@global.binlog_format, @@global.binlog_row_image, "
                                 "@@global.binlog_checksum, @@global.server_id, @@version");
  MYSQL_ROW row = res ? mysql_fetch_row(res) : NULL;
  if (!row) {
    snprintf(msg, ERRLEN, "cannot read the binlog settings of source %s: %s", where, mysql_error(s->my));
    if (res) mysql_free_result(res);
    *err = mysql_errno(s->my);
    return -1;
  }
  const char *log_bin = row[0] ? row[0] : "0", *fmt = row[1] ? row[1] : "", *image = row[2] ? row[2] : "";
  const char *checksum = row[3] ? row[3] : "NONE";
  unsigned src_id = row[4] ? (unsigned)strtoul(row[4], NULL, 10) : 0;
  snprintf(s->server_version, sizeof s->server_version, "%s", row[5] ? row[5] : "");
  s->mariadb = strstr(s->server_version, "MariaDB") != NULL;
  msg[0] = 0;
  if (strcmp(log_bin, "1") != 0 && strcasecmp(log_bin, "ON") != 0)
    snprintf(msg, ERRLEN, "source %s has log_bin=OFF; mocdc needs the binary log (log_bin=ON, "
             "binlog_format=ROW and binlog_row_image=FULL in my.cnf, then restart the server)", where);
  else if (strcasecmp(fmt, "ROW") != 0)
    snprintf(msg, ERRLEN, "source %s has binlog_format=%s; mocdc needs binlog_format=ROW "
             "(SET GLOBAL binlog_format=ROW, or binlog_format=ROW in my.cnf)", where, fmt);
  else if (strcasecmp(image, "FULL") != 0)
    snprintf(msg, ERRLEN, "source %s has binlog_row_image=%s; mocdc needs binlog_row_image=FULL "
             "(SET GLOBAL binlog_row_image=FULL, or binlog_row_image=FULL in my.cnf)", where, image);
  else if (src_id == (unsigned)r->server_id)
    snprintf(msg, ERRLEN, "server_id %u is the server_id of source %s itself; pick another server_id for "
             "mocdc (unique among the source's replicas)", src_id, where);
  s->crc = strcasecmp(checksum, "NONE") != 0 && strcmp(checksum, "0") != 0 ? 4 : 0;
  mysql_free_result(res);
  if (msg[0]) { *err = 0; return -1; }

  res = query1(s->my, "SELECT @@global.binlog_row_metadata");
  if (res) {
    row = mysql_fetch_row(res);
    if (row && row[0]) snprintf(s->row_metadata, sizeof s->row_metadata, "%s", row[0]);
    mysql_free_result(res);
  }
  return 0;
}

/* Where to start: the source's current position when neither file nor gtid was
 * given; a given file must still be there and hold pos. 0, or -1 with msg and *err. */
static int start_position(stream *s, open_req *r, char *msg, unsigned *err) {
  const char *where = r->where;
  MYSQL_RES *res;
  MYSQL_ROW row;
  if (!r->has_file && !r->has_gtid) {      /* start from the source's current position */
    res = query1(s->my, "SHOW MASTER STATUS");
    row = res ? mysql_fetch_row(res) : NULL;
    if (!row || !row[0]) {
      unsigned e = mysql_errno(s->my);
      if (e == 1227)
        snprintf(msg, ERRLEN, "user '%s' may not read the binlog position of source %s: %s " GRANT_HINT,
                 r->co.user, where, mysql_error(s->my));
      else
        snprintf(msg, ERRLEN, "cannot read the current binlog position of source %s (SHOW MASTER STATUS): %s",
                 where, e ? mysql_error(s->my) : "no binlog");
      if (res) mysql_free_result(res);
      *err = mysql_errno(s->my);
      return -1;
    }
    snprintf(r->file, sizeof r->file, "%s", row[0]);
    r->pos = row[1] ? strtod(row[1], NULL) : 4;
    mysql_free_result(res);
    return 0;
  }
  if (!r->has_file) return 0;
  res = query1(s->my, "SHOW BINARY LOGS");      /* is the file still there? */
  if (!res) return 0;
  int found = 0;
  char first[512] = "";
  unsigned long long size = 0;
  while ((row = mysql_fetch_row(res))) {
    if (!first[0] && row[0]) snprintf(first, sizeof first, "%s", row[0]);
    if (row[0] && strcmp(row[0], r->file) == 0) {
      found = 1;
      size = row[1] ? strtoull(row[1], NULL, 10) : 0;
    }
  }
  mysql_free_result(res);
  *err = 1236;
  if (!found) {
    snprintf(msg, ERRLEN,
             "binlog file '%s' is no longer on source %s (purged; the oldest binlog there is '%s'): the "
             "saved position %s:%.0f cannot be resumed; start over from a new snapshot",
             r->file, where, first[0] ? first : "none", r->file, r->pos);
    return -1;
  }
  if (size && r->pos > (double)size) {
    snprintf(msg, ERRLEN, "position %.0f is past the end of binlog file '%s' on source %s (%llu bytes)",
             r->pos, r->file, where, size);
    return -1;
  }
  return 0;
}

/* The dump's session variables (checksums, heartbeats, the GTID start), then
 * COM_REGISTER_SLAVE + COM_BINLOG_DUMP. 0, or -1 with msg and *err. */
static int start_dump(stream *s, open_req *r, char *msg, unsigned *err) {
  const char *where = r->where;
  char sql[4400];
  snprintf(sql, sizeof sql, "SET @master_binlog_checksum = @@global.binlog_checksum, @mariadb_slave_capability = 4"
           ", @master_heartbeat_period = %.0f", r->heartbeat > 0 ? r->heartbeat * 1e9 : 0);
  if (mysql_query(s->my, sql) != 0) {
    snprintf(msg, ERRLEN, "cannot prepare the binlog stream on source %s: %s", where, mysql_error(s->my));
    *err = mysql_errno(s->my);
    return -1;
  }
  if (r->has_gtid) {
    char esc[2100];
    mysql_real_escape_string(s->my, esc, r->gtid, (unsigned long)strlen(r->gtid));
    snprintf(sql, sizeof sql, "SET @slave_connect_state = '%s', @slave_gtid_strict_mode = 0, "
             "@slave_gtid_ignore_duplicates = 0", esc);
    if (mysql_query(s->my, sql) != 0) {
      snprintf(msg, ERRLEN, "cannot set the GTID start position on source %s: %s", where, mysql_error(s->my));
      *err = mysql_errno(s->my);
      return -1;
    }
    r->file[0] = 0;
    r->pos = 4;
  }
  snprintf(s->file, sizeof s->file, "%s", r->file);
  s->pos = (uint64_t)r->pos;
  s->rpl = mariadb_rpl_init(s->my);
  if (!s->rpl) { snprintf(msg, ERRLEN, "out of memory"); *err = 0; return -1; }
  mariadb_rpl_optionsv(s->rpl, MARIADB_RPL_FILENAME, r->file, strlen(r->file));
  mariadb_rpl_optionsv(s->rpl, MARIADB_RPL_START, (unsigned long)r->pos);
  mariadb_rpl_optionsv(s->rpl, MARIADB_RPL_SERVER_ID, (unsigned int)r->server_id);
  /* a report host makes libmariadb register the replica (COM_REGISTER_SLAVE): the source's
   * SHOW SLAVE HOSTS lists mocdc with its server_id, as it lists any replica */
  mariadb_rpl_optionsv(s->rpl, MARIADB_RPL_HOST, "mocdc", (size_t)5);
  mariadb_rpl_optionsv(s->rpl, MARIADB_RPL_FLAGS,
                       (unsigned int)(r->blocking ? 0 : MARIADB_RPL_BINLOG_DUMP_NON_BLOCK));
  if (mariadb_rpl_open(s->rpl) != 0) {
    const char *em = mysql_error(s->my);
    /* Connector/C reports a refused COM_REGISTER_SLAVE with the errno but a generic text */
    if ((mysql_errno(s->my) == 1227 || mysql_errno(s->my) == 1045) && strstr(em, "Unknown or undefined error"))
      em = "Access denied; you need the REPLICATION SLAVE privilege to register as a replica";
    bl_fetch_error(s, mysql_errno(s->my), em);
    snprintf(msg, ERRLEN, "%s", s->err);
    *err = mysql_errno(s->my);
    return -1;
  }
  return 0;
}

/* open{<the connect fields of connopts.h>, server_id, file, pos, gtid, heartbeat, blocking} */
int bl_open(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  open_req r;
  read_request(L, &r);
  stream *s = lua_newuserdata(L, sizeof *s);
  memset(s, 0, sizeof *s);
  luaL_getmetatable(L, BINLOG_MT);
  lua_setmetatable(L, -2);
  snprintf(s->host, sizeof s->host, "%s", r.co.unix_socket ? r.co.unix_socket : r.co.host);
  snprintf(s->where, sizeof s->where, "%s", r.where);
  snprintf(s->user, sizeof s->user, "%s", r.co.user);
  s->port = (unsigned)r.co.port;
  s->server_id = (uint32_t)r.server_id;
  s->blocking = r.blocking;

  s->my = mocdc_connopts_init(&r.co);
  if (!s->my) return open_fail(L, s, "out of memory", 0);
  char msg[ERRLEN], why[1200];
  unsigned err = mocdc_connect(s->my, &r.co, why, sizeof why);
  if (err) {
    snprintf(msg, sizeof msg, "cannot connect to binlog source %s: %s", r.co.who, why);
    return open_fail(L, s, msg, err);
  }
  if (check_source(s, &r, msg, &err) != 0 || start_position(s, &r, msg, &err) != 0 ||
      start_dump(s, &r, msg, &err) != 0)
    return open_fail(L, s, msg, err);
  return 1;
}
