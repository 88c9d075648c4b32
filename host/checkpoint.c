/* mocdc.checkpoint.lib: the durable key/value store behind a pipeline's
 * checkpoint (one SQLite file, <checkpointLocation>/checkpoint.db).
 *
 * WAL journal + synchronous=FULL: a call that returned true survives a crash
 * or power loss; set_many() is one transaction (all keys or none). One table:
 * kv(key TEXT PRIMARY KEY, value TEXT). Statements are prepared once per store.
 *
 * Errors: SQLite failures (disk full, locked, corrupt) -> nil, msg.
 * Wrong argument types raise (after any open transaction is rolled back). */
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include "mocdc.h"

#define CP_MT "mocdc.checkpoint"
#define BUSY_TIMEOUT_MS 10000 /* default; open(path, ms) overrides */

enum { S_GET, S_SET, S_DEL, S_RANGE_ALL, S_RANGE_GE, S_RANGE_GE_LT,
       S_DEL_ALL, S_DEL_GE, S_DEL_GE_LT, S_BEGIN, S_COMMIT, S_ROLLBACK, S_COUNT };

static const char *const SQL[S_COUNT] = {
    [S_GET] = "SELECT value FROM kv WHERE key = ?1",
    [S_SET] = "INSERT INTO kv(key, value) VALUES (?1, ?2) "
              "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    [S_DEL] = "DELETE FROM kv WHERE key = ?1",
    [S_RANGE_ALL] = "SELECT key, value FROM kv ORDER BY key",
    [S_RANGE_GE] = "SELECT key, value FROM kv WHERE key >= ?1 ORDER BY key",
    [S_RANGE_GE_LT] = "SELECT key, value FROM kv WHERE key >= ?1 AND key < ?2 ORDER BY key",
    [S_DEL_ALL] = "DELETE FROM kv",
    [S_DEL_GE] = "DELETE FROM kv WHERE key >= ?1",
    [S_DEL_GE_LT] = "DELETE FROM kv WHERE key >= ?1 AND key < ?2",
    [S_BEGIN] = "BEGIN IMMEDIATE",
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
};

typedef struct {
  sqlite3 *db; /* NULL once closed */
  sqlite3_stmt *st[S_COUNT];
} store;

static void store_close(store *s) {
  if (!s->db) return;
  for (int i = 0; i < S_COUNT; i++) {
    sqlite3_finalize(s->st[i]);
    s->st[i] = NULL;
  }
  sqlite3_close_v2(s->db);
  s->db = NULL;
}

static store *check_store(lua_State *L) {
  store *s = (store *)luaL_checkudata(L, 1, CP_MT);
  if (!s->db) luaL_argerror(L, 1, "checkpoint store is closed");
  return s;
}

/* nil, "checkpoint <what>: <sqlite message>" */
static int fail(lua_State *L, store *s, const char *what) {
  lua_pushnil(L);
  lua_pushfstring(L, "checkpoint %s: %s", what, sqlite3_errmsg(s->db));
  lua_pushinteger(L, sqlite3_extended_errcode(s->db));
  return 3;
}

/* Runs a statement with no result rows; returns the sqlite result code. */
static int step_done(sqlite3_stmt *st) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* open(path[, busy_timeout_ms]) -> store | nil, msg. The directory must exist
 * (the Lua wrapper creates it). */
static int l_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int busy_ms = (int)luaL_optinteger(L, 2, BUSY_TIMEOUT_MS);
  store *s = (store *)lua_newuserdata(L, sizeof *s);
  memset(s, 0, sizeof *s);
  luaL_getmetatable(L, CP_MT);
  lua_setmetatable(L, -2);

  int rc = sqlite3_open_v2(path, &s->db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  const char *step = "open";
  if (rc == SQLITE_OK) {
    sqlite3_busy_timeout(s->db, busy_ms);
    sqlite3_extended_result_codes(s->db, 1);
    char *journal = NULL;
    sqlite3_stmt *st = NULL;
    /* journal_mode returns the resulting mode: insist it is wal */
    rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
      journal = sqlite3_mprintf("%s", (const char *)sqlite3_column_text(st, 0));
    else if (rc == SQLITE_OK) rc = sqlite3_errcode(s->db);
    sqlite3_finalize(st);
    if (rc == SQLITE_OK && (!journal || strcmp(journal, "wal") != 0)) {
      sqlite3_free(journal);
      store_close(s);
      lua_pushnil(L);
      lua_pushfstring(L, "cannot open checkpoint %s: WAL journal mode not available", path);
      return 2;
    }
    sqlite3_free(journal);
    step = "set up";
    if (rc == SQLITE_OK)
      rc = sqlite3_exec(s->db,
                        "PRAGMA synchronous=FULL;"
                        "CREATE TABLE IF NOT EXISTS kv(key TEXT PRIMARY KEY, value TEXT)",
                        NULL, NULL, NULL);
    step = "prepare";
    for (int i = 0; rc == SQLITE_OK && i < S_COUNT; i++)
      rc = sqlite3_prepare_v3(s->db, SQL[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL);
  }
  if (rc != SQLITE_OK) {
    lua_pushnil(L);
    lua_pushfstring(L, "cannot %s checkpoint %s: %s", step, path,
                    s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
    store_close(s);
    return 2;
  }
  return 1;
}

/* get(key) -> value | nil (absent) | nil, msg (failure) */
static int l_get(lua_State *L) {
  store *s = check_store(L);
  size_t kn;
  const char *k = luaL_checklstring(L, 2, &kn);
  sqlite3_stmt *st = s->st[S_GET];
  sqlite3_bind_text(st, 1, k, (int)kn, SQLITE_STATIC);
  int rc = sqlite3_step(st);
  int nret = 1;
  if (rc == SQLITE_ROW) {
    if (sqlite3_column_type(st, 0) == SQLITE_NULL) lua_pushnil(L);
    else lua_pushlstring(L, (const char *)sqlite3_column_text(st, 0), (size_t)sqlite3_column_bytes(st, 0));
  } else if (rc == SQLITE_DONE) {
    lua_pushnil(L);
  } else {
    nret = fail(L, s, "get");
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  return nret;
}

/* Value at idx as text: strings, and numbers (converted by Lua); else NULL. */
static const char *value_arg(lua_State *L, int idx, size_t *n) {
  int t = lua_type(L, idx);
  if (t != LUA_TSTRING && t != LUA_TNUMBER) return NULL;
  return lua_tolstring(L, idx, n);
}

static int bind_set(store *s, const char *k, size_t kn, const char *v, size_t vn) {
  sqlite3_stmt *st = s->st[S_SET];
  sqlite3_bind_text(st, 1, k, (int)kn, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, v, (int)vn, SQLITE_STATIC);
  return step_done(st);
}

/* set(key, value) -> true | nil, msg */
static int l_set(lua_State *L) {
  store *s = check_store(L);
  size_t kn, vn;
  const char *k = luaL_checklstring(L, 2, &kn);
  const char *v = value_arg(L, 3, &vn);
  if (!v) return luaL_argerror(L, 3, lua_pushfstring(L, "string expected, got %s", luaL_typename(L, 3)));
  if (bind_set(s, k, kn, v, vn) != SQLITE_OK) return fail(L, s, "set");
  lua_pushboolean(L, 1);
  return 1;
}

/* set_many{key = value, ...} -> true | nil, msg. One transaction. A key or
 * value of the wrong type rolls back and raises. */
static int l_set_many(lua_State *L) {
  store *s = check_store(L);
  luaL_checktype(L, 2, LUA_TTABLE);
  if (step_done(s->st[S_BEGIN]) != SQLITE_OK) return fail(L, s, "set_many");
  const char *bad = NULL;
  int rc = SQLITE_OK;
  lua_pushnil(L);
  while (lua_next(L, 2) != 0) {
    size_t kn, vn;
    const char *v = value_arg(L, -1, &vn);
    /* never lua_tolstring a number key: it would confuse lua_next */
    const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tolstring(L, -2, &kn) : NULL;
    if (!k || !v) {
      if (!k) bad = lua_pushfstring(L, "key must be a string, got %s", luaL_typename(L, -2));
      else bad = lua_pushfstring(L, "value for key '%s': string expected, got %s", k, luaL_typename(L, -1));
      break;
    }
    rc = bind_set(s, k, kn, v, vn);
    lua_pop(L, 1);
    if (rc != SQLITE_OK) {
      lua_pop(L, 1);
      break;
    }
  }
  if (!bad && rc == SQLITE_OK) rc = step_done(s->st[S_COMMIT]);
  if (bad || rc != SQLITE_OK) {
    int nret = bad ? 0 : fail(L, s, "set_many"); /* message before ROLLBACK resets it */
    if (!sqlite3_get_autocommit(s->db)) step_done(s->st[S_ROLLBACK]);
    if (bad) return luaL_argerror(L, 2, bad);
    return nret;
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* delete(key) -> true | nil, msg */
static int l_delete(lua_State *L) {
  store *s = check_store(L);
  size_t kn;
  const char *k = luaL_checklstring(L, 2, &kn);
  sqlite3_bind_text(s->st[S_DEL], 1, k, (int)kn, SQLITE_STATIC);
  if (step_done(s->st[S_DEL]) != SQLITE_OK) return fail(L, s, "delete");
  lua_pushboolean(L, 1);
  return 1;
}

/* Picks and binds the statement for "key starts with prefix" as a range on
 * the primary key (BINARY collation = memcmp): [prefix, successor(prefix)).
 * `hi` must hold at least pn bytes. */
static sqlite3_stmt *bind_prefix(store *s, int all, int ge, int ge_lt, const char *p, size_t pn,
                                 char *hi) {
  if (pn == 0) return s->st[all];
  size_t hn = pn;
  memcpy(hi, p, pn);
  while (hn > 0 && (unsigned char)hi[hn - 1] == 0xff) hn--;
  sqlite3_stmt *st;
  if (hn == 0) {
    st = s->st[ge];
  } else {
    hi[hn - 1] = (char)((unsigned char)hi[hn - 1] + 1);
    st = s->st[ge_lt];
    sqlite3_bind_text(st, 2, hi, (int)hn, SQLITE_STATIC);
  }
  sqlite3_bind_text(st, 1, p, (int)pn, SQLITE_STATIC);
  return st;
}

/* delete_prefix(prefix) -> number deleted | nil, msg */
static int l_delete_prefix(lua_State *L) {
  store *s = check_store(L);
  size_t pn;
  const char *p = luaL_checklstring(L, 2, &pn);
  char *hi = (char *)lua_newuserdata(L, pn + 1);
  sqlite3_stmt *st = bind_prefix(s, S_DEL_ALL, S_DEL_GE, S_DEL_GE_LT, p, pn, hi);
  if (step_done(st) != SQLITE_OK) return fail(L, s, "delete_prefix");
  lua_pushinteger(L, sqlite3_changes(s->db));
  return 1;
}

/* Shared by keys() and items(): as_map = 0 -> sorted array of keys,
 * 1 -> {key = value}. */
static int scan(lua_State *L, int as_map) {
  store *s = check_store(L);
  size_t pn;
  const char *p = luaL_optlstring(L, 2, "", &pn);
  char *hi = (char *)lua_newuserdata(L, pn + 1);
  sqlite3_stmt *st = bind_prefix(s, S_RANGE_ALL, S_RANGE_GE, S_RANGE_GE_LT, p, pn, hi);
  lua_newtable(L);
  int n = 0, rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    lua_pushlstring(L, (const char *)sqlite3_column_text(st, 0), (size_t)sqlite3_column_bytes(st, 0));
    if (as_map) {
      lua_pushlstring(L, (const char *)sqlite3_column_text(st, 1), (size_t)sqlite3_column_bytes(st, 1));
      lua_rawset(L, -3);
    } else {
      lua_rawseti(L, -2, ++n);
    }
  }
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
  if (rc != SQLITE_DONE) return fail(L, s, as_map ? "items" : "keys");
  return 1;
}

static int l_keys(lua_State *L) { return scan(L, 0); }
static int l_items(lua_State *L) { return scan(L, 1); }

/* close() and __gc: idempotent. */
static int l_close(lua_State *L) {
  store_close((store *)luaL_checkudata(L, 1, CP_MT));
  return 0;
}

static int l_tostring(lua_State *L) {
  store *s = (store *)luaL_checkudata(L, 1, CP_MT);
  const char *f = s->db ? sqlite3_db_filename(s->db, "main") : NULL;
  if (f) lua_pushfstring(L, "mocdc.checkpoint: %s", f);
  else lua_pushliteral(L, "mocdc.checkpoint: (closed)");
  return 1;
}

/* version(): SQLite library version (for `mocdc version`). */
static int l_version(lua_State *L) {
  lua_pushstring(L, sqlite3_libversion());
  return 1;
}

int luaopen_mocdc_checkpoint_lib(lua_State *L) {
  static const luaL_Reg methods[] = {
      {"get", l_get},       {"set", l_set},       {"set_many", l_set_many},
      {"delete", l_delete}, {"delete_prefix", l_delete_prefix},
      {"keys", l_keys},     {"items", l_items},   {"close", l_close},
      {NULL, NULL}};
  static const luaL_Reg fns[] = {{"open", l_open}, {"version", l_version}, {NULL, NULL}};
  mocdc_class(L, CP_MT, methods, l_close, l_tostring);
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  return 1;
}
