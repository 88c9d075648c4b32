/* mocdc.util.lib: clocks, signals, process helpers and other OS bits the Lua
 * stdlib needs (Lua 5.1's os/io lack them). Errors: nil, msg. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "mocdc.h"

static int l_now(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  lua_pushnumber(L, (double)ts.tv_sec + ts.tv_nsec / 1e9);
  return 1;
}

static int l_mono(lua_State *L) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  lua_pushnumber(L, (double)ts.tv_sec + ts.tv_nsec / 1e9);
  return 1;
}

/* sleep(seconds): returns early (false) when a stop was requested. */
static int l_sleep(lua_State *L) {
  double s = luaL_checknumber(L, 1);
  while (s > 0 && !mocdc_stop_requested) {
    double step = s > 0.05 ? 0.05 : s;
    struct timespec ts = {(time_t)step, (long)((step - (time_t)step) * 1e9)};
    nanosleep(&ts, NULL);
    s -= step;
  }
  lua_pushboolean(L, !mocdc_stop_requested);
  return 1;
}

static int l_isatty(lua_State *L) {
  lua_pushboolean(L, isatty((int)luaL_optinteger(L, 1, 1)));
  return 1;
}

static int l_getpid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

static int l_stop_requested(lua_State *L) {
  if (mocdc_stop_requested) lua_pushinteger(L, mocdc_stop_requested);
  else lua_pushboolean(L, 0);
  return 1;
}

static int l_clear_stop(lua_State *L) {
  mocdc_stop_requested = 0;
  return 0;
}

/* UUIDv7 (RFC 9562): 48-bit unix ms, version 7, 74 random bits. */
static int l_uuid7(lua_State *L) {
  unsigned char b[16];
  int fd = open("/dev/urandom", O_RDONLY);
  if (fd < 0 || read(fd, b, 16) != 16) {
    if (fd >= 0) close(fd);
    return mocdc_push_fail(L, "cannot read /dev/urandom", errno, NULL);
  }
  close(fd);
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t ms = (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  for (int i = 0; i < 6; i++) b[i] = (unsigned char)(ms >> (40 - 8 * i));
  b[6] = (b[6] & 0x0f) | 0x70;
  b[8] = (b[8] & 0x3f) | 0x80;
  char s[37];
  snprintf(s, sizeof s,
           "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
           b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
           b[14], b[15]);
  lua_pushstring(L, s);
  return 1;
}

/* fsync(file): flush a Lua io file and fsync it. */
static int l_fsync(lua_State *L) {
  FILE **fp = (FILE **)luaL_checkudata(L, 1, LUA_FILEHANDLE);
  if (!*fp) return luaL_argerror(L, 1, "closed file");
  if (fflush(*fp) != 0 || fsync(fileno(*fp)) != 0)
    return mocdc_push_fail(L, strerror(errno), errno, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* fsync_dir(path): make a rename/creation in a directory durable. */
static int l_fsync_dir(lua_State *L) {
  const char *p = luaL_checkstring(L, 1);
  int fd = open(p, O_RDONLY | O_DIRECTORY);
  if (fd < 0) return mocdc_push_fail(L, strerror(errno), errno, NULL);
  fsync(fd);
  close(fd);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_mkdir_p(lua_State *L) {
  const char *p = luaL_checkstring(L, 1);
  char buf[4096];
  size_t n = strlen(p);
  if (n == 0 || n >= sizeof buf) return mocdc_push_fail(L, "bad directory path", 0, NULL);
  memcpy(buf, p, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] == '/' || buf[i] == 0) {
      char c = buf[i];
      buf[i] = 0;
      if (mkdir(buf, 0755) != 0 && errno != EEXIST) {
        lua_pushnil(L);
        lua_pushfstring(L, "cannot create directory %s: %s", buf, strerror(errno));
        return 2;
      }
      buf[i] = c;
    }
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_exists(lua_State *L) {
  struct stat st;
  lua_pushboolean(L, stat(luaL_checkstring(L, 1), &st) == 0);
  return 1;
}

static int l_kill(lua_State *L) {
  pid_t pid = (pid_t)luaL_checkinteger(L, 1);
  int sig = (int)luaL_optinteger(L, 2, SIGTERM);
  if (kill(pid, sig) != 0) return mocdc_push_fail(L, strerror(errno), errno, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

/* spawn(argv, logpath): start a detached process (own session, stdin from
 * /dev/null, stdout+stderr appended to logpath). Returns its pid. */
static int l_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  const char *logpath = luaL_optstring(L, 2, "/dev/null");
  int n = (int)lua_objlen(L, 1);
  if (n < 1) return luaL_argerror(L, 1, "empty argv");
  char **argv = calloc((size_t)n + 1, sizeof *argv);
  if (!argv) return mocdc_push_fail(L, "out of memory", ENOMEM, NULL);
  for (int i = 0; i < n; i++) {
    lua_rawgeti(L, 1, i + 1);
    argv[i] = (char *)lua_tostring(L, -1); /* kept alive by the table */
    lua_pop(L, 1);
  }
  pid_t pid = fork();
  if (pid < 0) {
    free(argv);
    return mocdc_push_fail(L, strerror(errno), errno, NULL);
  }
  if (pid == 0) {
    setsid();
    pid_t pid2 = fork(); /* double fork: never a zombie of the caller */
    if (pid2 != 0) _exit(pid2 < 0 ? 1 : 0);
    int in = open("/dev/null", O_RDONLY);
    int out = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (in >= 0) dup2(in, 0);
    if (out >= 0) { dup2(out, 1); dup2(out, 2); }
    for (int fd = 3; fd < 1024; fd++) close(fd);
    signal(SIGPIPE, SIG_DFL);
    execv(argv[0], argv);
    _exit(127);
  }
  int st;
  waitpid(pid, &st, 0);
  free(argv);
  lua_pushboolean(L, WIFEXITED(st) && WEXITSTATUS(st) == 0);
  return 1;
}

/* truncate(path, size): cut a file back to a committed length. */
static int l_truncate(lua_State *L) {
  const char *p = luaL_checkstring(L, 1);
  lua_Integer n = luaL_checkinteger(L, 2);
  if (truncate(p, (off_t)n) != 0) return mocdc_push_fail(L, strerror(errno), errno, NULL);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_file_size(lua_State *L) {
  struct stat st;
  if (stat(luaL_checkstring(L, 1), &st) != 0) return mocdc_push_fail(L, strerror(errno), errno, NULL);
  lua_pushinteger(L, (lua_Integer)st.st_size);
  return 1;
}

static int l_exe_path(lua_State *L) {
  char buf[4096];
  ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n < 0) return mocdc_push_fail(L, strerror(errno), errno, NULL);
  lua_pushlstring(L, buf, (size_t)n);
  return 1;
}

static int l_peak_rss_kb(lua_State *L) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  lua_pushinteger(L, ru.ru_maxrss);
  return 1;
}

/* hex(bytes) -> lower-case hex text; unhex(text) -> bytes, or nil, msg on an odd length or
 * a non-hex digit. The one hex rule of the Lua layer (watermark keys, diff state, the
 * file sink's binary values). */
static int l_hex(lua_State *L) {
  static const char dig[] = "0123456789abcdef";
  size_t n;
  const unsigned char *s = (const unsigned char *)luaL_checklstring(L, 1, &n);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < n; i++) {
    luaL_addchar(&b, dig[s[i] >> 4]);
    luaL_addchar(&b, dig[s[i] & 15]);
  }
  luaL_pushresult(&b);
  return 1;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int l_unhex(lua_State *L) {
  size_t n;
  const char *s = luaL_checklstring(L, 1, &n);
  if (n % 2) return mocdc_push_fail(L, "unhex: odd number of hex digits", 0, NULL);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (size_t i = 0; i < n; i += 2) {
    int hi = hexval((unsigned char)s[i]), lo = hexval((unsigned char)s[i + 1]);
    if (hi < 0 || lo < 0) return mocdc_push_fail(L, "unhex: not a hex digit", 0, NULL);
    luaL_addchar(&b, (char)(hi << 4 | lo));
  }
  luaL_pushresult(&b);
  return 1;
}

/* lock(path, holder): an exclusive flock(2) on path (created 0644, close-on-exec
 * so spawned children never hold it), without waiting. On success the file's
 * content becomes `holder` (who holds it, for the error of the next one) and a
 * "mocdc.lock" handle is returned; the lock lasts until handle:close() or its
 * __gc, or the process ends. Held elsewhere: nil, msg, EWOULDBLOCK. */
#define LOCK_MT "mocdc.lock"
typedef struct { int fd; } file_lock;

static int l_lock(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t hn;
  const char *holder = luaL_checklstring(L, 2, &hn);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return mocdc_push_fail(L, strerror(errno), errno, NULL);
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    close(fd);
    return mocdc_push_fail(L, e == EWOULDBLOCK ? "locked by another process" : strerror(e), e, NULL);
  }
  if (ftruncate(fd, 0) != 0 || pwrite(fd, holder, hn, 0) != (ssize_t)hn) {
    int e = errno;
    close(fd); /* releases the lock */
    return mocdc_push_fail(L, strerror(e), e, NULL);
  }
  file_lock *lk = (file_lock *)lua_newuserdata(L, sizeof *lk);
  lk->fd = fd;
  luaL_getmetatable(L, LOCK_MT);
  lua_setmetatable(L, -2);
  return 1;
}

/* close() and __gc: idempotent. */
static int l_lock_close(lua_State *L) {
  file_lock *lk = (file_lock *)luaL_checkudata(L, 1, LOCK_MT);
  if (lk->fd >= 0) {
    close(lk->fd);
    lk->fd = -1;
  }
  return 0;
}

static int l_lock_tostring(lua_State *L) {
  file_lock *lk = (file_lock *)luaL_checkudata(L, 1, LOCK_MT);
  lua_pushstring(L, lk->fd >= 0 ? "mocdc.lock: held" : "mocdc.lock: (released)");
  return 1;
}

int luaopen_mocdc_util_lib(lua_State *L) {
  static const luaL_Reg fns[] = {
      {"now", l_now},           {"mono", l_mono},
      {"sleep", l_sleep},       {"isatty", l_isatty},
      {"getpid", l_getpid},     {"stop_requested", l_stop_requested},
      {"clear_stop", l_clear_stop}, {"uuid7", l_uuid7},
      {"fsync", l_fsync},       {"fsync_dir", l_fsync_dir},
      {"mkdir_p", l_mkdir_p},   {"exists", l_exists},
      {"kill", l_kill},         {"spawn", l_spawn},
      {"truncate", l_truncate}, {"file_size", l_file_size},
      {"exe_path", l_exe_path}, {"peak_rss_kb", l_peak_rss_kb},
      {"lock", l_lock},         {"hex", l_hex},
      {"unhex", l_unhex},
      {NULL, NULL}};
  static const luaL_Reg lock_methods[] = {{"close", l_lock_close}, {NULL, NULL}};
  mocdc_class(L, LOCK_MT, lock_methods, l_lock_close, l_lock_tostring);
  lua_newtable(L);
  luaL_register(L, NULL, fns);
  lua_pushinteger(L, EWOULDBLOCK);
  lua_setfield(L, -2, "EWOULDBLOCK");
  return 1;
}
