/* mocdc.conn.lib: MySQL-protocol connections (MySQL, MariaDB, MatrixOne) over
 * MariaDB Connector/C, streaming cursors, and the LOAD DATA LOCAL full-copy path.
 *
 * Objects (host/README.md):
 *   "mocdc.conn"   owns a MYSQL*. Messages name user@host:port, never the password.
 *   "mocdc.cursor" owns a MYSQL_RES* from mysql_use_result and holds a registry
 *                  ref to its conn, so the conn outlives it. While a cursor is
 *                  open its conn refuses other statements (instead of Connector/C's
 *                  "Commands out of sync"). A cursor read to the end releases its
 *                  result and the conn at once.
 *
 * Closing: cursor:close() on an unfinished cursor reads and discards the rest
 * (the conn stays usable); conn:close() and a garbage-collected unfinished
 * cursor drop the socket instead (bounded time on a 600M-row table).
 *
 * load_from(): the sink's local-infile handler pulls rows straight from the
 * source cursor (mysql_fetch_row) and encodes them into LOAD DATA's default
 * text format inside Connector/C's read buffer: no Lua and no allocation per
 * row. A source error shuts the sink socket down so the server aborts (rolls
 * back) the LOAD DATA instead of committing a truncated chunk. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <mysql.h>
#include <errmsg.h>
#include "batch.h"
#include "connopts.h"
#include "mocdc.h"

#define CONN_MT "mocdc.conn"
#define CURSOR_MT "mocdc.cursor"
#define BINARY_CHARSET 63

typedef struct mcursor mcursor;
typedef struct loadstate loadstate;

typedef struct mconn {
  MYSQL *my;
  mcursor *cursor;       /* open streaming cursor on this conn, or NULL */
  loadstate *load;       /* set while load_from() runs on this (sink) conn */
  MYSQL_RES *pending;    /* query() result being converted (freed on a Lua error later) */
  char who[300];         /* user@host:port */
  char why[160];         /* why the conn was closed, if not by close() */
  int local_infile;      /* opened with local_infile (our handler installed) */
  int inflight;          /* a statement sent with send() waits to be reaped */
} mconn;

/* How the LOAD DATA writer encodes a column. */
enum { ENC_PLAIN = 0, ENC_ESC = 1, ENC_BIT = 2 };

struct mcursor {
  MYSQL_RES *res;        /* NULL once exhausted or closed */
  mconn *conn;           /* NULL once released */
  int conn_ref;
  int ncols;
  uint8_t *enc;          /* ENC_* per column */
  int done;              /* read to the end */
  double nrows;
};

/* ---- helpers ------------------------------------------------------------ */

static int fail_my(lua_State *L, MYSQL *my) {
  return mocdc_push_fail(L, mysql_error(my), (int)mysql_errno(my), mysql_sqlstate(my));
}

static int field_class(const MYSQL_FIELD *f) {
  switch (f->type) {
  case MYSQL_TYPE_TINY: case MYSQL_TYPE_SHORT: case MYSQL_TYPE_LONG:
  case MYSQL_TYPE_INT24: case MYSQL_TYPE_LONGLONG: case MYSQL_TYPE_DECIMAL:
  case MYSQL_TYPE_NEWDECIMAL: case MYSQL_TYPE_FLOAT: case MYSQL_TYPE_DOUBLE:
  case MYSQL_TYPE_YEAR:
    return MOCDC_NUM;
  case MYSQL_TYPE_BIT:
    return MOCDC_BIT;
  case MYSQL_TYPE_STRING: case MYSQL_TYPE_VAR_STRING: case MYSQL_TYPE_VARCHAR:
  case MYSQL_TYPE_TINY_BLOB: case MYSQL_TYPE_MEDIUM_BLOB: case MYSQL_TYPE_LONG_BLOB:
  case MYSQL_TYPE_BLOB: case MYSQL_TYPE_GEOMETRY:
    if (f->flags & (ENUM_FLAG | SET_FLAG)) return MOCDC_STR;
    return f->charsetnr == BINARY_CHARSET ? MOCDC_BIN : MOCDC_STR;
  default: /* ENUM, SET, JSON, DATE, TIME, DATETIME, TIMESTAMP, NULL, ... */
    return MOCDC_STR;
  }
}

/* Columns whose text form never holds \t \n \\ or NUL skip the escape scan. */
static int field_enc(const MYSQL_FIELD *f) {
  int cls = field_class(f);
  if (cls == MOCDC_BIT) return ENC_BIT;
  if (cls == MOCDC_NUM) return ENC_PLAIN;
  switch (f->type) {
  case MYSQL_TYPE_DATE: case MYSQL_TYPE_NEWDATE: case MYSQL_TYPE_TIME:
  case MYSQL_TYPE_DATETIME: case MYSQL_TYPE_TIMESTAMP:
    return ENC_PLAIN;
  default:
    return ENC_ESC;
  }
}

static const char *const class_names[] = {"num", "str", "bin", "bit"};

static void setfield_str(lua_State *L, const char *k, const char *v, size_t len) {
  lua_pushlstring(L, v ? v : "", v ? len : 0);
  lua_setfield(L, -2, k);
}

static void setfield_num(lua_State *L, const char *k, double v) {
  lua_pushnumber(L, v);
  lua_setfield(L, -2, k);
}

/* Push the columns array for a result. */
static void push_columns(lua_State *L, MYSQL_RES *res) {
  unsigned n = mysql_num_fields(res);
  MYSQL_FIELD *fs = mysql_fetch_fields(res);
  lua_createtable(L, (int)n, 0);
  for (unsigned i = 0; i < n; i++) {
    const MYSQL_FIELD *f = &fs[i];
    lua_createtable(L, 0, 12);
    setfield_str(L, "name", f->name, f->name_length);
    setfield_str(L, "org_name", f->org_name, f->org_name_length);
    setfield_str(L, "table", f->table, f->table_length);
    setfield_str(L, "org_table", f->org_table, f->org_table_length);
    setfield_str(L, "db", f->db, f->db_length);
    setfield_num(L, "type", f->type);
    lua_pushstring(L, class_names[field_class(f)]);
    lua_setfield(L, -2, "class");
    setfield_num(L, "flags", f->flags);
    setfield_num(L, "length", (double)f->length);
    setfield_num(L, "decimals", f->decimals);
    setfield_num(L, "charsetnr", f->charsetnr);
    lua_rawseti(L, -2, (int)i + 1);
  }
}

/* ---- connection handle -------------------------------------------------- */

static mconn *check_conn(lua_State *L, int idx) {
  return (mconn *)luaL_checkudata(L, idx, CONN_MT);
}

static void free_pending(mconn *c) {
  if (c->pending) {
    mysql_free_result(c->pending);
    c->pending = NULL;
  }
}

/* Detach and free a cursor's result. drain: read the rest so the conn stays
 * usable; otherwise the result is dropped without touching the socket (the
 * caller then closes the conn). */
static void cursor_release(lua_State *L, mcursor *cur, int drain) {
  if (cur->res) {
    if (!drain || !cur->conn || !cur->conn->my) cur->res->handle = NULL;
    mysql_free_result(cur->res);
    cur->res = NULL;
  }
  if (cur->conn) {
    if (cur->conn->cursor == cur) cur->conn->cursor = NULL;
    cur->conn = NULL;
    luaL_unref(L, LUA_REGISTRYINDEX, cur->conn_ref);
    cur->conn_ref = LUA_NOREF;
  }
  free(cur->enc);
  cur->enc = NULL;
}

static void conn_shut(lua_State *L, mconn *c, const char *why) {
  if (c->cursor) cursor_release(L, c->cursor, 0);
  free_pending(c);
  c->inflight = 0;
  if (c->my) {
    mysql_close(c->my);
    c->my = NULL;
    if (why) snprintf(c->why, sizeof c->why, "%s", why);
  }
}

/* The conn for a statement: NULL after pushing the failure when it is closed or busy. */
static int push_closed(lua_State *L, mconn *c) {
  if (c->why[0])
    lua_pushfstring(L, "connection %s is closed: %s", c->who, c->why);
  else
    lua_pushfstring(L, "connection %s is closed", c->who);
  return mocdc_push_fail(L, lua_tostring(L, -1), CR_UNKNOWN_ERROR, NULL);
}

static mconn *ready_conn(lua_State *L, int idx, int *nret) {
  mconn *c = check_conn(L, idx);
  free_pending(c);
  if (!c->my) {
    *nret = push_closed(L, c);
    return NULL;
  }
  if (c->inflight) {
    lua_pushfstring(L, "connection %s is busy: a statement sent with send() is in flight (reap it first)", c->who);
    *nret = mocdc_push_fail(L, lua_tostring(L, -1), CR_COMMANDS_OUT_OF_SYNC, NULL);
    return NULL;
  }
  if (c->cursor) {
    lua_pushfstring(L, "connection %s is busy: a streaming cursor is open on it "
                       "(read it to the end or close it first)", c->who);
    *nret = mocdc_push_fail(L, lua_tostring(L, -1), CR_COMMANDS_OUT_OF_SYNC, NULL);
    return NULL;
  }
  return c;
}

static int opt_bool(lua_State *L, const char *k) {
  lua_getfield(L, 1, k);
  int v = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return v;
}

static int infile_init(void **ptr, const char *filename, void *userdata);
static int infile_read(void *ptr, char *buf, unsigned int buflen);
static void infile_end(void *ptr);
static int infile_error(void *ptr, char *msg, unsigned int len);

/* connect{host, port, user, password, database, unix_socket, charset, ssl_mode,
 * ssl_ca, ssl_cert, ssl_key, connect_timeout, read_timeout, write_timeout,
 * local_infile} -> conn | nil, msg, errno, sqlstate
 * Every field but local_infile is the shared opener's (connopts.c). */
static int l_connect(lua_State *L) {
  mocdc_connopts o;
  mocdc_connopts_read(L, 1, "connect", &o);
  int local_infile = opt_bool(L, "local_infile");

  mconn *c = (mconn *)lua_newuserdata(L, sizeof *c);
  memset(c, 0, sizeof *c);
  luaL_getmetatable(L, CONN_MT);
  lua_setmetatable(L, -2);
  snprintf(c->who, sizeof c->who, "%s", o.who);

  c->my = mocdc_connopts_init(&o);
  if (!c->my) return mocdc_push_fail(L, "out of memory (mysql_init)", CR_OUT_OF_MEMORY, NULL);
  MYSQL *my = c->my;
  /* Always explicit: Connector/C may default to accepting file requests. */
  unsigned int li = local_infile ? 1 : 0;
  mysql_options(my, MYSQL_OPT_LOCAL_INFILE, &li);
  c->local_infile = local_infile;
  if (local_infile) /* our handler serves only the load_from stream, never local files */
    mysql_set_local_infile_handler(my, infile_init, infile_read, infile_end, infile_error, c);

  char msg[1200];
  unsigned err = mocdc_connect(my, &o, msg, sizeof msg);
  if (err) {
    char sqlstate[6];
    snprintf(sqlstate, sizeof sqlstate, "%s", mysql_errno(my) ? mysql_sqlstate(my) : "HY000");
    mysql_close(my);
    c->my = NULL;
    lua_pushfstring(L, "cannot connect to %s: %s", c->who, msg);
    return mocdc_push_fail(L, lua_tostring(L, -1), (int)err, sqlstate);
  }
  return 1;
}

static int l_conn_gc(lua_State *L) {
  mconn *c = check_conn(L, 1);
  conn_shut(L, c, NULL);
  return 0;
}

static int l_conn_close(lua_State *L) {
  l_conn_gc(L);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_conn_tostring(lua_State *L) {
  mconn *c = check_conn(L, 1);
  lua_pushfstring(L, "mocdc.conn(%s%s)", c->who, c->my ? "" : ", closed");
  return 1;
}

/* The result of the statement just run (or reaped) on c, as query() returns it. */
static int push_result(lua_State *L, mconn *c) {
  int nret, base = lua_gettop(L);
  MYSQL_RES *res = mysql_store_result(c->my);
  if (!res) {
    if (mysql_field_count(c->my) != 0) return fail_my(L, c->my);
    lua_pushnumber(L, (double)mysql_affected_rows(c->my));
    lua_pushnumber(L, (double)mysql_insert_id(c->my));
    nret = 2;
  } else {
    c->pending = res; /* a Lua error below leaves it for the next call / close */
    unsigned n = mysql_num_fields(res);
    my_ulonglong nrows = mysql_num_rows(res);
    lua_createtable(L, nrows < 1u << 24 ? (int)nrows : 0, 0);
    MYSQL_ROW row;
    int r = 0;
    while ((row = mysql_fetch_row(res))) {
      unsigned long *lens = mysql_fetch_lengths(res);
      lua_createtable(L, (int)n, 0);
      for (unsigned i = 0; i < n; i++) {
        if (row[i]) lua_pushlstring(L, row[i], lens[i]);
        else lua_pushlightuserdata(L, NULL);
        lua_rawseti(L, -2, (int)i + 1);
      }
      lua_rawseti(L, -2, ++r);
    }
    push_columns(L, res);
    c->pending = NULL;
    mysql_free_result(res);
    nret = 2;
  }
  /* CALL and friends may leave more results: discard them to stay in sync */
  while (mysql_more_results(c->my)) {
    if (mysql_next_result(c->my) > 0) {
      lua_settop(L, base);
      return fail_my(L, c->my);
    }
    MYSQL_RES *extra = mysql_store_result(c->my);
    if (extra) mysql_free_result(extra);
  }
  return nret;
}

/* What exec() returns, from the n values push_result() left: a result set's
 * row count, or the affected rows, or the failure. */
static int exec_result(lua_State *L, int n) {
  if (n >= 2 && lua_istable(L, -2)) { /* a result set: report its row count */
    lua_pushnumber(L, (double)lua_objlen(L, -2));
    return 1;
  }
  if (n == 2 && !lua_isnil(L, -2)) {
    lua_pop(L, 1);
    return 1;
  }
  return n;
}

/* query(sql) -> rows, columns | affected_rows, insert_id | nil, msg, errno, sqlstate */
static int l_query(lua_State *L) {
  int nret;
  mconn *c = ready_conn(L, 1, &nret);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  if (!c) return nret;
  if (mysql_real_query(c->my, sql, (unsigned long)len)) return fail_my(L, c->my);
  return push_result(L, c);
}

/* send(sql) -> true | nil, msg...: start a statement without waiting (reap() it) */
static int l_send(lua_State *L) {
  int nret;
  mconn *c = ready_conn(L, 1, &nret);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  if (!c) return nret;
  if (mysql_send_query(c->my, sql, (unsigned long)len)) return fail_my(L, c->my);
  c->inflight = 1;
  lua_pushboolean(L, 1);
  return 1;
}

/* The conn of reap()/reap_query(): open, with a statement in flight (cleared). */
static mconn *reap_conn(lua_State *L, int *nret) {
  mconn *c = check_conn(L, 1);
  free_pending(c);
  if (!c->my) {
    *nret = push_closed(L, c);
    return NULL;
  }
  if (!c->inflight) {
    lua_pushfstring(L, "reap on %s: no statement in flight (send() one first)", c->who);
    *nret = mocdc_push_fail(L, lua_tostring(L, -1), CR_COMMANDS_OUT_OF_SYNC, NULL);
    return NULL;
  }
  c->inflight = 0;
  return c;
}

/* reap() -> affected_rows | nil, msg...: the result of the statement send() started */
static int l_reap(lua_State *L) {
  int nret;
  mconn *c = reap_conn(L, &nret);
  if (!c) return nret;
  if (mysql_read_query_result(c->my)) return fail_my(L, c->my);
  return exec_result(L, push_result(L, c));
}

/* reap_query() -> what query() returns: the result of the statement send()
 * started (several connections can then run statements at the same time) */
static int l_reap_query(lua_State *L) {
  int nret;
  mconn *c = reap_conn(L, &nret);
  if (!c) return nret;
  if (mysql_read_query_result(c->my)) return fail_my(L, c->my);
  return push_result(L, c);
}

/* exec(sql) -> affected_rows | nil, msg, errno, sqlstate */
static int l_exec(lua_State *L) {
  return exec_result(L, l_query(L));
}

static int l_escape(lua_State *L) {
  mconn *c = check_conn(L, 1);
  size_t len;
  const char *s = luaL_checklstring(L, 2, &len);
  if (!c->my) return luaL_error(L, "escape: connection %s is closed", c->who);
  char *to = (char *)lua_newuserdata(L, 2 * len + 1);
  unsigned long n = mysql_real_escape_string(c->my, to, s, (unsigned long)len);
  if (n == (unsigned long)-1) return luaL_error(L, "escape: cannot escape this string in the connection's character set");
  lua_pushlstring(L, to, n);
  return 1;
}

static mconn *open_conn(lua_State *L, int idx, const char *what) {
  mconn *c = check_conn(L, idx);
  if (!c->my) luaL_error(L, "%s: connection %s is closed", what, c->who);
  return c;
}

static int l_server_info(lua_State *L) {
  mconn *c = open_conn(L, 1, "server_info");
  lua_pushstring(L, mysql_get_server_info(c->my));
  return 1;
}

static int l_server_version(lua_State *L) {
  mconn *c = open_conn(L, 1, "server_version");
  lua_pushnumber(L, (double)mysql_get_server_version(c->my));
  return 1;
}

static int l_thread_id(lua_State *L) {
  mconn *c = open_conn(L, 1, "thread_id");
  lua_pushnumber(L, (double)mysql_thread_id(c->my));
  return 1;
}

static int l_ping(lua_State *L) {
  int nret;
  mconn *c = ready_conn(L, 1, &nret);
  if (!c) return nret;
  if (mysql_ping(c->my)) return fail_my(L, c->my);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_is_open(lua_State *L) {
  mconn *c = check_conn(L, 1);
  lua_pushboolean(L, c->my != NULL);
  return 1;
}

/* ---- streaming cursor --------------------------------------------------- */

static mcursor *check_cursor(lua_State *L, int idx) {
  return (mcursor *)luaL_checkudata(L, idx, CURSOR_MT);
}

/* stream(sql) -> cursor, columns | nil, msg, errno, sqlstate */
static int l_stream(lua_State *L) {
  int nret;
  mconn *c = ready_conn(L, 1, &nret);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  if (!c) return nret;
  mcursor *cur = (mcursor *)lua_newuserdata(L, sizeof *cur);
  memset(cur, 0, sizeof *cur);
  cur->conn_ref = LUA_NOREF;
  luaL_getmetatable(L, CURSOR_MT);
  lua_setmetatable(L, -2);
  if (mysql_real_query(c->my, sql, (unsigned long)len)) return fail_my(L, c->my);
  MYSQL_RES *res = mysql_use_result(c->my);
  if (!res) {
    if (mysql_field_count(c->my) == 0)
      return mocdc_push_fail(L, "stream: the statement returned no result set", CR_UNKNOWN_ERROR, NULL);
    return fail_my(L, c->my);
  }
  cur->res = res;
  cur->ncols = (int)mysql_num_fields(res);
  cur->enc = (uint8_t *)malloc((size_t)cur->ncols + 1);
  cur->conn = c;
  c->cursor = cur;
  lua_pushvalue(L, 1);
  cur->conn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  if (!cur->enc) {
    cursor_release(L, cur, 0);
    conn_shut(L, c, "out of memory");
    return luaL_error(L, "stream: out of memory");
  }
  MYSQL_FIELD *fs = mysql_fetch_fields(res);
  for (int i = 0; i < cur->ncols; i++) cur->enc[i] = (uint8_t)field_enc(&fs[i]);
  push_columns(L, res);
  return 2;
}

/* The cursor reached the end: free the result, give the conn back. */
static void cursor_finish(lua_State *L, mcursor *cur) {
  cur->done = 1;
  cursor_release(L, cur, 1);
}

static int fail_fetch(lua_State *L, mcursor *cur) {
  MYSQL *my = cur->conn->my;
  return mocdc_push_fail(L, mysql_error(my), (int)mysql_errno(my), mysql_sqlstate(my));
}

/* A change row's op from its flag value (INSERT / UPDATE / DELETE in any
 * case, as MatrixOne's DATA BRANCH DIFF reports them), or 0. */
static int flag_op(const char *v, unsigned long len) {
  static const char *const flags[] = {"INSERT", "UPDATE", "DELETE"};
  if (!v || len != 6) return 0;
  for (int k = 0; k < 3; k++) {
    int i = 0;
    while (i < 6 && (v[i] & ~0x20) == flags[k][i]) i++;
    if (i == 6) return k + 1; /* MOCDC_INSERT, MOCDC_UPDATE, MOCDC_DELETE */
  }
  return 0;
}

/* The projection of fetch()'s 5th argument {cols = {i, ...}, flag = i}
 * (1-based cursor columns) as 0-based indexes in a GC'd userdata: map[0..ncols-1]
 * per batch column, map[ncols] the flag column. Misuse raises. */
static int *read_projection(lua_State *L, int idx, const mcursor *cur, const mocdc_batch *b) {
  luaL_checktype(L, idx, LUA_TTABLE);
  int *map = (int *)lua_newuserdata(L, sizeof(int) * ((size_t)b->ncols + 1));
  lua_getfield(L, idx, "cols");
  if (!lua_istable(L, -1) || (int)lua_objlen(L, -1) != b->ncols)
    luaL_error(L, "fetch: projection cols must list one cursor column per batch column (%d)", b->ncols);
  for (int i = 0; i <= b->ncols; i++) {
    if (i < b->ncols) lua_rawgeti(L, -1, i + 1);
    else lua_getfield(L, idx, "flag");
    lua_Integer c = lua_isnumber(L, -1) ? lua_tointeger(L, -1) : 0;
    if (c < 1 || c > cur->ncols)
      luaL_error(L, "fetch: projection %s %d is not a cursor column (1..%d)", i < b->ncols ? "column" : "flag",
                 (int)c, cur->ncols);
    map[i] = (int)c - 1;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);
  return map;
}

/* fetch(batch, max_rows[, max_bytes[, projection]]) -> n (0 at the end) | nil, msg[, errno, sqlstate]
 * Without a projection each row is an insert of all cursor columns. With one
 * ({cols =, flag =}) each row is a change of the columns `cols`, its op read
 * from column `flag` (mocdc_batch_add_projected); another flag value stops
 * the fetch with nil, msg (the rows before it stay in the batch). */
static int l_fetch(lua_State *L) {
  mcursor *cur = check_cursor(L, 1);
  mocdc_batch *b = mocdc_batch_check(L, 2);
  lua_Number max_rows = luaL_checknumber(L, 3);
  lua_Number max_bytes = luaL_optnumber(L, 4, 0);
  if (max_rows < 1) return luaL_argerror(L, 3, "max_rows must be >= 1");
  if (cur->done) { lua_pushinteger(L, 0); return 1; }
  if (!cur->res) return luaL_error(L, "fetch: cursor is closed");
  const int *map = lua_isnoneornil(L, 5) ? NULL : read_projection(L, 5, cur, b);
  if (!map && b->ncols != cur->ncols)
    return luaL_error(L, "fetch: batch has %d columns, the cursor %d", b->ncols, cur->ncols);
  double n = 0;
  while (n < max_rows) {
    MYSQL_ROW row = mysql_fetch_row(cur->res);
    if (!row) {
      if (mysql_errno(cur->conn->my)) return fail_fetch(L, cur);
      cursor_finish(L, cur);
      break;
    }
    unsigned long *lens = mysql_fetch_lengths(cur->res);
    int rc;
    if (map) {
      int f = map[b->ncols], op = flag_op(row[f], lens[f]);
      if (!op) {
        if (row[f]) lua_pushlstring(L, row[f], lens[f] > 64 ? 64 : lens[f]);
        lua_pushfstring(L, "row %d: flag column %d holds %s%s%s, not INSERT, UPDATE or DELETE", (int)cur->nrows + 1,
                        f + 1, row[f] ? "'" : "", row[f] ? lua_tostring(L, -1) : "NULL", row[f] ? "'" : "");
        return mocdc_push_fail(L, lua_tostring(L, -1), 0, NULL);
      }
      rc = mocdc_batch_add_projected(b, op, 0, (const char *const *)row, lens, map);
    } else {
      rc = mocdc_batch_add(b, MOCDC_INSERT, 0, NULL, NULL, (const char *const *)row, lens);
    }
    if (rc != 0) return luaL_error(L, "fetch: out of memory");
    n++;
    cur->nrows++;
    if (max_bytes > 0 && (lua_Number)mocdc_batch_bytes(b) >= max_bytes) break;
  }
  lua_pushnumber(L, n);
  return 1;
}

static int l_cursor_close(lua_State *L) {
  mcursor *cur = check_cursor(L, 1);
  cursor_release(L, cur, 1);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_cursor_gc(lua_State *L) {
  mcursor *cur = check_cursor(L, 1);
  if (cur->res && cur->conn) {
    /* abandoned mid-result: dropping the socket is bounded, draining is not */
    mconn *c = cur->conn;
    cursor_release(L, cur, 0);
    conn_shut(L, c, "a streaming cursor on it was garbage-collected before it was read to the end");
  } else {
    cursor_release(L, cur, 0);
  }
  return 0;
}

static int l_cursor_done(lua_State *L) {
  lua_pushboolean(L, check_cursor(L, 1)->done);
  return 1;
}

static int l_cursor_rows(lua_State *L) {
  lua_pushnumber(L, check_cursor(L, 1)->nrows);
  return 1;
}

static int l_cursor_tostring(lua_State *L) {
  mcursor *cur = check_cursor(L, 1);
  lua_pushfstring(L, "mocdc.cursor(%s, %s)", cur->conn ? cur->conn->who : "-",
                  cur->done ? "done" : cur->res ? "open" : "closed");
  return 1;
}

/* ---- LOAD DATA LOCAL writer --------------------------------------------- */

struct loadstate {
  mconn *sink;
  mcursor *cur;
  MYSQL_RES *res;
  int ncols;
  const uint8_t *enc;
  double max_rows, rows, bytes;
  MYSQL_ROW row;              /* fetched, not yet written */
  unsigned long *lens;
  mocdc_buf spill;            /* one row larger than the read buffer */
  size_t spill_pos;
  int nkeys;
  int *key_cols;              /* 0-based */
  mocdc_buf keybuf;           /* last written row's key values */
  uint32_t *key_off, *key_len;
  int active;                 /* the server asked for the file */
  int failed;                 /* 1: source error, 2: out of memory */
  unsigned int err;
  char sqlstate[SQLSTATE_LENGTH + 1];
  char msg[MYSQL_ERRMSG_SIZE + 400];
};

/* LOAD DATA default ESCAPED BY '\\': these bytes need a backslash form. */
static char esc_tab[256];

static void esc_tab_init(void) {
  esc_tab['\\'] = '\\';
  esc_tab['\t'] = 't';
  esc_tab['\n'] = 'n';
  esc_tab['\r'] = 'r';
  esc_tab[0] = '0';
}

static size_t row_worst(const loadstate *s) {
  size_t w = (size_t)s->ncols + 1;
  for (int i = 0; i < s->ncols; i++) {
    if (!s->row[i]) w += 2;
    else if (s->enc[i] == ENC_ESC) w += 2 * (size_t)s->lens[i];
    else if (s->enc[i] == ENC_BIT) w += 20;
    else w += s->lens[i];
  }
  return w;
}

/* Encode the pending row at o (room for row_worst() bytes); returns the end. */
static char *encode_row(const loadstate *s, char *o) {
  for (int i = 0; i < s->ncols; i++) {
    if (i) *o++ = '\t';
    const unsigned char *p = (const unsigned char *)s->row[i];
    size_t len = s->lens[i];
    if (!p) {
      *o++ = '\\';
      *o++ = 'N';
    } else if (s->enc[i] == ENC_PLAIN) {
      memcpy(o, p, len);
      o += len;
    } else if (s->enc[i] == ENC_ESC) {
      const unsigned char *e = p + len;
      while (p < e) {
        unsigned char ch = *p++;
        char x = esc_tab[ch];
        if (x) { *o++ = '\\'; *o++ = x; }
        else *o++ = (char)ch;
      }
    } else { /* BIT: big-endian bytes -> unsigned decimal */
      uint64_t v = 0;
      for (size_t k = 0; k < len; k++) v = (v << 8) | p[k];
      char tmp[24];
      int n = 0;
      do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
      while (n) *o++ = tmp[--n];
    }
  }
  *o++ = '\n';
  return o;
}

static int finish_row(loadstate *s) {
  s->keybuf.len = 0;
  for (int k = 0; k < s->nkeys; k++) {
    int i = s->key_cols[k];
    if (!s->row[i]) {
      s->key_off[k] = 0;
      s->key_len[k] = UINT32_MAX;
    } else {
      s->key_off[k] = (uint32_t)s->keybuf.len;
      s->key_len[k] = (uint32_t)s->lens[i];
      if (mocdc_buf_add(&s->keybuf, s->row[i], s->lens[i])) return -1;
    }
  }
  s->row = NULL;
  s->rows++;
  s->cur->nrows++;
  return 0;
}

static void load_fail(loadstate *s, int kind, const char *msg, unsigned err, const char *sqlstate) {
  s->failed = kind;
  s->err = err;
  snprintf(s->msg, sizeof s->msg, "%s", msg);
  snprintf(s->sqlstate, sizeof s->sqlstate, "%s", sqlstate ? sqlstate : "HY000");
  /* Make the server abort the statement (and roll the chunk back) rather than
   * see a clean end of file and commit a truncated chunk. */
  int fd = (int)mysql_get_socket(s->sink->my);
  if (fd >= 0) shutdown(fd, SHUT_RDWR);
}

static int infile_init(void **ptr, const char *filename, void *userdata) {
  mconn *c = (mconn *)userdata;
  *ptr = c->load;
  if (!c->load) return 1; /* not inside load_from: refuse, whatever file is asked for */
  c->load->active = 1;
  return 0;
}

static int infile_read(void *ptr, char *buf, unsigned int buflen) {
  loadstate *s = (loadstate *)ptr;
  if (s->failed) return -1;
  char *o = buf, *end = buf + buflen;
  if (s->spill_pos < s->spill.len) {
    size_t n = s->spill.len - s->spill_pos;
    if (n > buflen) n = buflen;
    memcpy(o, s->spill.p + s->spill_pos, n);
    s->spill_pos += n;
    o += n;
    if (s->spill_pos < s->spill.len) goto out;
    s->spill.len = s->spill_pos = 0;
  }
  for (;;) {
    if (!s->row) {
      if (s->rows >= s->max_rows) break;
      MYSQL_ROW r = mysql_fetch_row(s->res);
      if (!r) {
        MYSQL *src = s->cur->conn->my;
        if (mysql_errno(src)) {
          char m[MYSQL_ERRMSG_SIZE + 360];
          snprintf(m, sizeof m, "reading from source %s failed: %s", s->cur->conn->who, mysql_error(src));
          load_fail(s, 1, m, mysql_errno(src), mysql_sqlstate(src));
          return -1;
        }
        s->cur->done = 1;
        break;
      }
      s->row = r;
      s->lens = mysql_fetch_lengths(s->res);
    }
    size_t worst = row_worst(s);
    if (worst <= (size_t)(end - o)) {
      o = encode_row(s, o);
      if (finish_row(s)) goto oom;
      continue;
    }
    if (o > buf) break; /* the row starts the next buffer */
    if (mocdc_buf_reserve(&s->spill, worst)) goto oom;
    s->spill.len = (size_t)(encode_row(s, s->spill.p) - s->spill.p);
    s->spill_pos = 0;
    if (finish_row(s)) goto oom;
    size_t n = s->spill.len < buflen ? s->spill.len : buflen;
    memcpy(o, s->spill.p, n);
    s->spill_pos = n;
    o += n;
    if (s->spill_pos == s->spill.len) s->spill.len = s->spill_pos = 0;
    break;
  }
out:
  s->bytes += (double)(o - buf);
  return (int)(o - buf);
oom:
  load_fail(s, 2, "load_from: out of memory encoding a row", CR_OUT_OF_MEMORY, NULL);
  return -1;
}

static void infile_end(void *ptr) {
  (void)ptr; /* load_from() owns and frees the state */
}

static int infile_error(void *ptr, char *msg, unsigned int len) {
  loadstate *s = (loadstate *)ptr;
  if (!s) {
    snprintf(msg, len, "LOAD DATA LOCAL INFILE is refused: mocdc serves local data only through load_from()");
    return CR_UNKNOWN_ERROR;
  }
  snprintf(msg, len, "%s", s->msg);
  return (int)(s->err ? s->err : CR_UNKNOWN_ERROR);
}

static void load_free(loadstate *s) {
  mocdc_buf_free(&s->spill);
  mocdc_buf_free(&s->keybuf);
  free(s->key_cols);
  free(s->key_off);
  free(s->key_len);
}

/* load_from(cursor, sql, opts{max_rows, key_cols}) -> rows, bytes, last_key, warnings
 *   | nil, msg, errno, sqlstate */
static int l_load_from(lua_State *L) {
  mconn *sink = check_conn(L, 1);
  mcursor *cur = check_cursor(L, 2);
  size_t sqllen;
  const char *sql = luaL_checklstring(L, 3, &sqllen);
  luaL_checktype(L, 4, LUA_TTABLE);
  lua_getfield(L, 4, "max_rows");
  if (!lua_isnumber(L, -1)) return luaL_error(L, "load_from: opts.max_rows must be a number");
  double max_rows = lua_tonumber(L, -1);
  lua_pop(L, 1);
  if (max_rows < 1) return luaL_error(L, "load_from: opts.max_rows must be >= 1");
  lua_getfield(L, 4, "key_cols");
  int kt = lua_gettop(L);
  int nkeys = 0;
  if (!lua_isnil(L, kt)) {
    if (!lua_istable(L, kt)) return luaL_error(L, "load_from: opts.key_cols must be an array");
    nkeys = (int)lua_objlen(L, kt);
  }
  if (cur->done) { /* exhausted: nothing to load */
    lua_pushinteger(L, 0);
    lua_pushinteger(L, 0);
    lua_pushnil(L);
    lua_pushinteger(L, 0);
    return 4;
  }
  if (!cur->res || !cur->conn) return luaL_error(L, "load_from: cursor is closed");
  for (int k = 1; k <= nkeys; k++) {
    lua_rawgeti(L, kt, k);
    int col = (int)lua_tointeger(L, -1);
    if (col < 1 || col > cur->ncols)
      return luaL_error(L, "load_from: key column %d is out of range (the cursor has %d columns)", col, cur->ncols);
    lua_pop(L, 1);
  }
  if (cur->conn == sink)
    return luaL_error(L, "load_from: the cursor must come from another connection than the sink");
  int nret;
  if (!ready_conn(L, 1, &nret)) return nret;
  if (!sink->local_infile)
    return luaL_error(L, "load_from: connection %s was opened without local_infile", sink->who);

  loadstate s;
  memset(&s, 0, sizeof s);
  s.sink = sink;
  s.cur = cur;
  s.res = cur->res;
  s.ncols = cur->ncols;
  s.enc = cur->enc;
  s.max_rows = max_rows;
  s.nkeys = nkeys;
  if (nkeys) {
    s.key_cols = (int *)malloc(sizeof(int) * (size_t)nkeys);
    s.key_off = (uint32_t *)malloc(sizeof(uint32_t) * (size_t)nkeys);
    s.key_len = (uint32_t *)malloc(sizeof(uint32_t) * (size_t)nkeys);
    if (!s.key_cols || !s.key_off || !s.key_len) {
      load_free(&s);
      return luaL_error(L, "load_from: out of memory");
    }
    for (int k = 0; k < nkeys; k++) {
      lua_rawgeti(L, kt, k + 1);
      s.key_cols[k] = (int)lua_tointeger(L, -1) - 1;
      lua_pop(L, 1);
    }
  }
  if (!esc_tab['\\']) esc_tab_init();

  sink->load = &s;
  int rc = mysql_real_query(sink->my, sql, (unsigned long)sqllen);
  sink->load = NULL;

  if (s.failed) {
    /* the sink socket was shut down on purpose; the conn is no longer usable */
    lua_pushstring(L, s.msg);
    lua_pushstring(L, s.sqlstate);
    unsigned err = s.err;
    load_free(&s);
    conn_shut(L, sink, "a LOAD DATA was aborted because its source failed");
    lua_pushnil(L);
    lua_pushvalue(L, -3);
    lua_pushinteger(L, (lua_Integer)err);
    lua_pushvalue(L, -4);
    return 4;
  }
  if (rc) {
    load_free(&s);
    return fail_my(L, sink->my);
  }
  MYSQL_RES *extra = mysql_store_result(sink->my);
  if (extra) mysql_free_result(extra);
  if (!s.active) {
    load_free(&s);
    return mocdc_push_fail(L, "load_from: the statement did not read LOCAL INFILE data "
                              "(expected LOAD DATA LOCAL INFILE 'mocdc://stream' ...)", CR_UNKNOWN_ERROR, NULL);
  }
  if (s.cur->done) cursor_finish(L, cur);
  lua_pushnumber(L, s.rows);
  lua_pushnumber(L, s.bytes);
  if (s.nkeys && s.rows > 0) {
    lua_createtable(L, s.nkeys, 0);
    for (int k = 0; k < s.nkeys; k++) {
      if (s.key_len[k] == UINT32_MAX) lua_pushlightuserdata(L, NULL);
      else lua_pushlstring(L, s.keybuf.p + s.key_off[k], s.key_len[k]);
      lua_rawseti(L, -2, k + 1);
    }
  } else {
    lua_pushnil(L);
  }
  lua_pushnumber(L, (double)mysql_warning_count(sink->my));
  load_free(&s);
  return 4;
}

/* ---- module ------------------------------------------------------------- */

/* client_info(): libmariadb version string (for `mocdc version`). */
static int l_client_info(lua_State *L) {
  lua_pushstring(L, mysql_get_client_info());
  return 1;
}

int luaopen_mocdc_conn_lib(lua_State *L) {
  static const luaL_Reg conn_methods[] = {
      {"query", l_query},           {"exec", l_exec}, {"send", l_send}, {"reap", l_reap},
      {"reap_query", l_reap_query},
      {"escape", l_escape},         {"server_info", l_server_info},
      {"server_version", l_server_version}, {"thread_id", l_thread_id},
      {"ping", l_ping},             {"close", l_conn_close},
      {"is_open", l_is_open},       {"stream", l_stream},
      {"load_from", l_load_from},   {NULL, NULL}};
  static const luaL_Reg cursor_methods[] = {
      {"fetch", l_fetch}, {"close", l_cursor_close}, {"done", l_cursor_done},
      {"rows", l_cursor_rows}, {NULL, NULL}};
  static const luaL_Reg fns[] = {{"connect", l_connect}, {"client_info", l_client_info}, {NULL, NULL}};

  mocdc_class(L, CONN_MT, conn_methods, l_conn_gc, l_conn_tostring);
  mocdc_class(L, CURSOR_MT, cursor_methods, l_cursor_gc, l_cursor_tostring);
  esc_tab_init();

  lua_newtable(L);
  luaL_register(L, NULL, fns);
  lua_pushlightuserdata(L, NULL);
  lua_setfield(L, -2, "NULL");
  return 1;
}
