/* mocdc.regex.lib — placeholder until implemented (see host/README.md). */
#include "mocdc.h"
int luaopen_mocdc_regex_lib(lua_State *L) {
  return luaL_error(L, "mocdc.regex.lib is not implemented yet");
}
