/* mocdc.conn.lib — placeholder until implemented (see host/README.md). */
#include "mocdc.h"
int luaopen_mocdc_conn_lib(lua_State *L) {
  return luaL_error(L, "mocdc.conn.lib is not implemented yet");
}
