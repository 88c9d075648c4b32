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
 * This file is the Lua binding: the stream's methods, next() (the event loop),
 * set_schema(), close. binlog_internal.h lists the other binlog_*.c files and
 * what they share. */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "binlog_internal.h"
#include <ma_pvio.h>   /* after mysql.h */

static stream *check_stream(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, BINLOG_MT);
}

static stream *check_open(lua_State *L, int idx) {
  stream *s = check_stream(L, idx);
  if (!s->my) luaL_error(L, "binlog stream is closed");
  return s;
}

void bl_stream_close(stream *s) {
  if (s->ev) { mariadb_free_rpl_event(s->ev); s->ev = NULL; }
  if (s->rpl) { mariadb_rpl_close(s->rpl); s->rpl = NULL; }
  if (s->my) { mysql_close(s->my); s->my = NULL; }
  mocdc_batch_free(s->acc); s->acc = NULL;
  bl_maps_clear(s);
  bl_names_clear(s);
  mocdc_buf_free(&s->scratch);
  mocdc_buf_free(&s->ubuf);
  free(s->vr); free(s->vp); free(s->vl);
  s->vr = NULL; s->vp = NULL; s->vl = NULL; s->vcap = 0;
  free(s->deferred); s->deferred = NULL;
  s->ev_pending = 0;
  bl_convs_close(s);
}

static int push_error(lua_State *L, stream *s) {
  return mocdc_push_fail(L, s->err, s->deferred_errno, NULL);
}

/* stream:next([max_rows[, max_bytes]]) -> event | nil (EOF) | nil, msg, errno */
static int l_next(lua_State *L) {
  stream *s = check_open(L, 1);
  lua_Integer max_rows = luaL_optinteger(L, 2, 10000);
  lua_Number max_bytes = luaL_optnumber(L, 3, (lua_Number)DEFAULT_MAX_BYTES);
  if (max_rows < 1) return luaL_argerror(L, 2, "max_rows must be >= 1");
  if (max_bytes < 1) return luaL_argerror(L, 3, "max_bytes must be >= 1");
  if (s->deferred) {
    if (bl_have_rows(s)) return bl_push_rows(L, s);
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
        if (bl_have_rows(s)) return bl_push_rows(L, s);
        lua_pushnil(L);
        return 1;
      }
      if ((++spins & 1023) == 0 && mocdc_stop_requested && !s->acc) {
        new_event(L, "heartbeat", 2);   /* let the caller see the stop request */
        set_filepos(L, s);
        return 1;
      }
      int r = bl_fetch(s);
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
        if (bl_have_rows(s)) return bl_push_rows(L, s);
        new_event(L, "heartbeat", 2);
        set_filepos(L, s);
        return 1;
      }
      if (r < 0) {
        s->deferred = strdup(s->err);
        if (bl_have_rows(s)) return bl_push_rows(L, s);
        return push_error(L, s);
      }
      s->ev_pending = 1;
      s->rc.active = 0;
    }
    int r = bl_process(L, s, (size_t)max_rows, (size_t)max_bytes);
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
  tname *n = bl_name_get(s, db, dl, tb, tl, 1);
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
  tname *nm = bl_name_get(s, db, dl, tb, tl, 1);
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
  bl_spec_free(nm->spec, nm->nspec);
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
  bl_stream_close(s);
  return 0;
}

static int l_tostring(lua_State *L) {
  stream *s = check_stream(L, 1);
  if (!s->my) lua_pushstring(L, "mocdc.binlog (closed)");
  else lua_pushfstring(L, "mocdc.binlog (%s %s:%f)", s->where, s->file, (double)s->pos);
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
  bl_col_setup(&c, (uint8_t)type, (uint16_t)meta);
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
  c.cls = (uint8_t)bl_type_class(&c);
  mocdc_buf sb = {NULL, 0, 0};
  vref v;
  long r = bl_decode_value(&c, (const uint8_t *)bytes, (const uint8_t *)bytes + n, &sb, &v);
  if (r < 0) {
    lua_pushnil(L);
    lua_pushstring(L, r == DEC_TRUNC ? "truncated value" : "unsupported type");
  } else {
    if (v.soff >= 0) lua_pushlstring(L, sb.p + v.soff, v.len);
    else lua_pushlstring(L, v.p, v.len);
    lua_pushinteger(L, r);
  }
  mocdc_buf_free(&sb);
  bl_strlist_free(&vals);
  return 2;
}

/* format_real(x, is_float) -> text as the server's text protocol writes FLOAT/DOUBLE */
static int l_format_real(lua_State *L) {
  double x = luaL_checknumber(L, 1);
  int is_float = lua_toboolean(L, 2);
  char buf[80];
  size_t n = bl_fmt_real(is_float ? (double)(float)x : x, is_float, buf);
  lua_pushlstring(L, buf, n);
  return 1;
}

int luaopen_mocdc_binlog_lib(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"next", l_next}, {"want", l_want}, {"set_schema", l_set_schema}, {"position", l_position},
      {"info", l_info}, {"readable", l_readable}, {"close", l_close}, {NULL, NULL}};
  static const luaL_Reg funcs[] = {
      {"open", bl_open}, {"decode_value", l_decode_value}, {"format_real", l_format_real}, {NULL, NULL}};
  mocdc_class(L, BINLOG_MT, methods, l_close, l_tostring);
  lua_newtable(L);
  luaL_register(L, NULL, funcs);
  return 1;
}
