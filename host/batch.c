/* mocdc.batch.lib — placeholder until implemented (see host/README.md). */
#include "mocdc.h"
int luaopen_mocdc_batch_lib(lua_State *L) {
  return luaL_error(L, "mocdc.batch.lib is not implemented yet");
}
