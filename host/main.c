/* mocdc entry point: one lua_State, native modules in package.preload, the
 * embedded stdlib as a package loader, and everything else in Lua
 * (lua/stdlib/mocdc/cli.lua). Scripts run only under lua_pcall. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <mysql.h>
#include "builtin.h"
#include "mocdc.h"

volatile int mocdc_stop_requested = 0;

static void on_signal(int sig) {
  mocdc_stop_requested = sig;
}

int mocdc_push_fail(lua_State *L, const char *msg, int err, const char *sqlstate) {
  lua_pushnil(L);
  lua_pushstring(L, msg ? msg : "unknown error");
  if (!err && !sqlstate) return 2;
  lua_pushinteger(L, err);
  if (!sqlstate) return 3;
  lua_pushstring(L, sqlstate);
  return 4;
}

void mocdc_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                 lua_CFunction tostring) {
  if (luaL_newmetatable(L, name)) {
    lua_newtable(L);
    luaL_register(L, NULL, methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    if (tostring) {
      lua_pushcfunction(L, tostring);
      lua_setfield(L, -2, "__tostring");
    }
  }
  lua_pop(L, 1);
}

/* package.loaders entry: MOCDC_LUA_PATH (development override) first, then the
 * sources compiled into the binary. */
static int builtin_loader(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  const char *dev = getenv("MOCDC_LUA_PATH");
  if (dev && *dev) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, dev);
    luaL_addchar(&b, '/');
    for (const char *p = name; *p; p++) luaL_addchar(&b, *p == '.' ? '/' : *p);
    luaL_pushresult(&b);
    const char *base = lua_tostring(L, -1);
    const char *cands[2] = {"%s.lua", "%s/init.lua"};
    for (int i = 0; i < 2; i++) {
      const char *path = lua_pushfstring(L, cands[i], base);
      FILE *f = fopen(path, "r");
      if (f) {
        fclose(f);
        if (luaL_loadfile(L, path) != 0) return lua_error(L);
        return 1;
      }
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
  for (const mocdc_builtin *m = mocdc_builtins; m->module; m++) {
    if (strcmp(m->module, name) == 0) {
      if (luaL_loadbuffer(L, m->source, m->len, m->chunkname) != 0) return lua_error(L);
      return 1;
    }
  }
  lua_pushfstring(L, "\n\tno builtin module '%s'", name);
  return 1;
}

/* Error handler: one line (the message already carries file:line); a
 * traceback follows only with MOCDC_DEBUG=1. Error tables pass through. */
static int on_error(lua_State *L) {
  if (!lua_isstring(L, 1)) return 1;
  const char *dbg = getenv("MOCDC_DEBUG");
  if (dbg && *dbg && strcmp(dbg, "0") != 0) {
    luaL_traceback(L, L, lua_tostring(L, 1), 1);
  }
  return 1;
}

static void preload(lua_State *L, const char *name, lua_CFunction f) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, f);
  lua_setfield(L, -2, name);
  lua_pop(L, 2);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);

  if (mysql_library_init(0, NULL, NULL)) {
    fprintf(stderr, "mocdc: error: could not initialise libmariadb\n");
    return 70;
  }
  lua_State *L = luaL_newstate();
  if (!L) {
    fprintf(stderr, "mocdc: error: out of memory creating the Lua state\n");
    return 70;
  }
  luaL_openlibs(L);

  preload(L, "mocdc.util.lib", luaopen_mocdc_util_lib);
  preload(L, "mocdc.conn.lib", luaopen_mocdc_conn_lib);
  preload(L, "mocdc.batch.lib", luaopen_mocdc_batch_lib);
  preload(L, "mocdc.sqlbuild.lib", luaopen_mocdc_sqlbuild_lib);
  preload(L, "mocdc.checkpoint.lib", luaopen_mocdc_checkpoint_lib);
  preload(L, "mocdc.regex.lib", luaopen_mocdc_regex_lib);
  preload(L, "mocdc.binlog.lib", luaopen_mocdc_binlog_lib);
  preload(L, "mocdc.rowdiff.lib", luaopen_mocdc_rowdiff_lib);

  /* insert builtin_loader right after the preload loader */
  lua_getglobal(L, "table");
  lua_getfield(L, -1, "insert");
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "loaders");
  lua_remove(L, -2);
  lua_pushinteger(L, 2);
  lua_pushcfunction(L, builtin_loader);
  lua_call(L, 3, 0);
  lua_pop(L, 1);

  /* global `arg` as the standalone interpreter sets it */
  lua_createtable(L, argc, 1);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i);
  }
  lua_setglobal(L, "arg");

  lua_pushcfunction(L, on_error);
  lua_getglobal(L, "require");
  lua_pushstring(L, "mocdc.cli");
  int rc = 0;
  if (lua_pcall(L, 1, 1, -3) != 0) {
    fprintf(stderr, "mocdc: error: %s\n", lua_isstring(L, -1) ? lua_tostring(L, -1) : "(error object)");
    rc = 70;
  } else {
    lua_getfield(L, -1, "main");
    lua_remove(L, -2);
    lua_createtable(L, argc, 0);
    for (int i = 1; i < argc; i++) {
      lua_pushstring(L, argv[i]);
      lua_rawseti(L, -2, i);
    }
    if (lua_pcall(L, 1, 1, -3) != 0) {
      fprintf(stderr, "mocdc: error: %s\n", lua_isstring(L, -1) ? lua_tostring(L, -1) : "(error object)");
      rc = 70;
    } else {
      rc = lua_isnumber(L, -1) ? (int)lua_tointeger(L, -1) : 0;
    }
  }
  fflush(stdout);
  lua_close(L);
  mysql_library_end();
  return rc;
}
