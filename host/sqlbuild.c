/* mocdc.sqlbuild.lib — placeholder until implemented (see host/README.md). */
#include "mocdc.h"
int luaopen_mocdc_sqlbuild_lib(lua_State *L) {
  return luaL_error(L, "mocdc.sqlbuild.lib is not implemented yet");
}
