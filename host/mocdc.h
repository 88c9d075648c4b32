/* mocdc host: shared declarations. See host/README.md for the C<->Lua boundary. */
#ifndef MOCDC_H
#define MOCDC_H
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

/* One luaopen per native module; host/main.c puts each in package.preload
 * under the name "mocdc.<name>.lib". The public API is lua/stdlib/mocdc/<name>.lua. */
int luaopen_mocdc_util_lib(lua_State *L);       /* host/util.c */
int luaopen_mocdc_conn_lib(lua_State *L);       /* host/conn.c */
int luaopen_mocdc_batch_lib(lua_State *L);      /* host/batch.c */
int luaopen_mocdc_sqlbuild_lib(lua_State *L);   /* host/sqlbuild.c */
int luaopen_mocdc_checkpoint_lib(lua_State *L); /* host/checkpoint.c */
int luaopen_mocdc_regex_lib(lua_State *L);      /* host/regex.c */
int luaopen_mocdc_binlog_lib(lua_State *L);     /* host/binlog.c */
int luaopen_mocdc_rowdiff_lib(lua_State *L);       /* host/rowdiff.c */

/* Expected runtime failure: push nil, msg[, errno[, sqlstate]] and return the count. */
int mocdc_push_fail(lua_State *L, const char *msg, int err, const char *sqlstate);

/* Create the metatable `name` once (methods as __index, __gc, __tostring);
 * leaves nothing on the stack. Every handle type of every module uses it. */
void mocdc_class(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                 lua_CFunction tostring);

/* Set by SIGINT/SIGTERM; long loops poll it and stop at a safe point. */
extern volatile int mocdc_stop_requested;

#endif
