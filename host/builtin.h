/* Lua sources of lua/stdlib compiled into the binary (see scripts/embed_lua.cmake). */
#ifndef MOCDC_BUILTIN_H
#define MOCDC_BUILTIN_H
#include <stddef.h>
typedef struct {
  const char *module;    /* "mocdc.sink.mysql" */
  const char *chunkname; /* "@builtin/mocdc/sink/mysql.lua" */
  const char *source;
  size_t len;
} mocdc_builtin;
extern const mocdc_builtin mocdc_builtins[];
#endif
