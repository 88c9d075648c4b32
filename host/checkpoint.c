/* mocdc.checkpoint.lib — placeholder until implemented (see host/README.md). */
#include "mocdc.h"
int luaopen_mocdc_checkpoint_lib(lua_State *L) {
  return luaL_error(L, "mocdc.checkpoint.lib is not implemented yet");
}
