/* The one connection opener (connopts.h): reads the connect fields from Lua, applies
 * them to a MYSQL handle and connects, for conn.c and binlog.c alike.
 *
 * TLS with MariaDB Connector/C 3.3: MYSQL_OPT_SSL_ENFORCE only *offers* TLS, so
 * "require" is checked after the handshake (mysql_get_ssl_cipher). A CA file makes it
 * verify the chain (SSL_VERIFY_PEER) whatever the mode, as the mysql client does;
 * MYSQL_OPT_SSL_VERIFY_SERVER_CERT adds the host name check, which it only does with a
 * CA file or path, so verify_identity falls back to the system CA directory. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <errmsg.h>
#include "connopts.h"

#define SYSTEM_CAPATH "/etc/ssl/certs"

static const char *const mode_names[] = {"disable", "require", "verify_ca", "verify_identity"};

/* Field of the connect table: string or nil (anything else raises). */
static const char *opt_str(lua_State *L, int t, const char *fn, const char *k) {
  lua_getfield(L, t, k);
  int ty = lua_type(L, -1);
  if (ty != LUA_TNIL && ty != LUA_TSTRING)
    luaL_error(L, "%s: field '%s' must be a string, got %s", fn, k, lua_typename(L, ty));
  const char *s = ty == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
  lua_pop(L, 1); /* the string stays referenced by the table */
  return s;
}

static long opt_num(lua_State *L, int t, const char *fn, const char *k, long dflt) {
  lua_getfield(L, t, k);
  long v = dflt;
  if (!lua_isnil(L, -1)) {
    if (!lua_isnumber(L, -1)) luaL_error(L, "%s: field '%s' must be a number", fn, k);
    double d = lua_tonumber(L, -1);
    if (d < 0 || d > 2147483647.0) luaL_error(L, "%s: field '%s' is out of range", fn, k);
    v = (long)d;
    if ((double)v < d) v++; /* timeouts round up: 0.5s is not "no timeout" */
  }
  lua_pop(L, 1);
  return v;
}

void mocdc_connopts_read(lua_State *L, int idx, const char *fn, mocdc_connopts *o) {
  if (idx < 0) idx = lua_gettop(L) + idx + 1;
  luaL_checktype(L, idx, LUA_TTABLE);
  memset(o, 0, sizeof *o);
  o->host = opt_str(L, idx, fn, "host");
  o->user = opt_str(L, idx, fn, "user");
  o->password = opt_str(L, idx, fn, "password");
  o->database = opt_str(L, idx, fn, "database");
  o->unix_socket = opt_str(L, idx, fn, "unix_socket");
  if (o->unix_socket && !*o->unix_socket) o->unix_socket = NULL;
  o->charset = opt_str(L, idx, fn, "charset");
  if (!o->charset) o->charset = "utf8mb4";
  o->ssl_mode_name = opt_str(L, idx, fn, "ssl_mode");
  o->ssl_ca = opt_str(L, idx, fn, "ssl_ca");
  o->ssl_cert = opt_str(L, idx, fn, "ssl_cert");
  o->ssl_key = opt_str(L, idx, fn, "ssl_key");
  o->port = opt_num(L, idx, fn, "port", 3306);
  o->connect_timeout = opt_num(L, idx, fn, "connect_timeout", 0);
  o->read_timeout = opt_num(L, idx, fn, "read_timeout", 0);
  o->write_timeout = opt_num(L, idx, fn, "write_timeout", 0);
  if (o->port < 0 || o->port > 65535) luaL_error(L, "%s: port %d is out of range", fn, (int)o->port);
  o->ssl_mode = MOCDC_SSL_DISABLE;
  if (o->ssl_mode_name) {
    int m = -1;
    for (int i = 0; i < 4; i++)
      if (!strcmp(o->ssl_mode_name, mode_names[i])) m = i;
    if (m < 0)
      luaL_error(L, "%s: ssl_mode must be disable, require, verify_ca or verify_identity, got '%s'", fn,
                 o->ssl_mode_name);
    o->ssl_mode = m;
  }
  if (o->unix_socket)
    snprintf(o->who, sizeof o->who, "%s@%s", o->user ? o->user : "", o->unix_socket);
  else
    snprintf(o->who, sizeof o->who, "%s@%s:%ld", o->user ? o->user : "", o->host ? o->host : "localhost", o->port);
}

MYSQL *mocdc_connopts_init(const mocdc_connopts *o) {
  MYSQL *my = mysql_init(NULL);
  if (!my) return NULL;
  mysql_options(my, MYSQL_SET_CHARSET_NAME, o->charset);
  unsigned int t;
  if (!o->unix_socket) { /* "localhost" means TCP here, as in a URI; sockets are explicit */
    t = MYSQL_PROTOCOL_TCP;
    mysql_options(my, MYSQL_OPT_PROTOCOL, &t);
  }
  if (o->connect_timeout > 0) { t = (unsigned)o->connect_timeout; mysql_options(my, MYSQL_OPT_CONNECT_TIMEOUT, &t); }
  if (o->read_timeout > 0) { t = (unsigned)o->read_timeout; mysql_options(my, MYSQL_OPT_READ_TIMEOUT, &t); }
  if (o->write_timeout > 0) { t = (unsigned)o->write_timeout; mysql_options(my, MYSQL_OPT_WRITE_TIMEOUT, &t); }
  if (o->ssl_mode > MOCDC_SSL_DISABLE) { /* disable: no TLS option at all (mocdc_connect refuses files) */
    my_bool on = 1;
    mysql_options(my, MYSQL_OPT_SSL_ENFORCE, &on);
    if (o->ssl_mode == MOCDC_SSL_VERIFY_IDENTITY) {
      mysql_options(my, MYSQL_OPT_SSL_VERIFY_SERVER_CERT, &on);
      if (!o->ssl_ca) mysql_options(my, MYSQL_OPT_SSL_CAPATH, SYSTEM_CAPATH);
    }
    if (o->ssl_ca) mysql_options(my, MYSQL_OPT_SSL_CA, o->ssl_ca);
    if (o->ssl_cert) mysql_options(my, MYSQL_OPT_SSL_CERT, o->ssl_cert);
    if (o->ssl_key) mysql_options(my, MYSQL_OPT_SSL_KEY, o->ssl_key);
  }
  return my;
}

/* Connector/C 3.3 reports every failed TCP connect as "(115)" (EINPROGRESS of
 * its non-blocking connect). Probe once to get the real reason (refused,
 * unreachable, timed out). Returns errno, or 0 when the probe connected. */
static int probe_tcp(const char *host, long port, long timeout_s) {
  char ps[16];
  snprintf(ps, sizeof ps, "%ld", port);
  struct addrinfo hints, *ai = NULL;
  memset(&hints, 0, sizeof hints);
  hints.ai_socktype = SOCK_STREAM;
  int gai = getaddrinfo(host ? host : "127.0.0.1", ps, &hints, &ai);
  if (gai != 0 || !ai) return 0;
  int err = 0;
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    err = errno;
  } else {
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
      err = errno;
      if (err == EINPROGRESS) {
        struct pollfd pfd = {fd, POLLOUT, 0};
        int r = poll(&pfd, 1, (int)(timeout_s > 0 ? timeout_s : 10) * 1000);
        socklen_t len = sizeof err;
        if (r == 0) err = ETIMEDOUT;
        else if (r < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      }
    }
    close(fd);
  }
  freeaddrinfo(ai);
  return err;
}

/* 0 when every TLS file given can be read; else the errno, and the reason in msg. */
static unsigned check_files(const mocdc_connopts *o, char *msg, size_t n) {
  const char *names[] = {"ssl-ca", "ssl-cert", "ssl-key"};
  const char *paths[] = {o->ssl_ca, o->ssl_cert, o->ssl_key};
  for (int i = 0; i < 3; i++) {
    if (!paths[i]) continue;
    int fd = open(paths[i], O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      snprintf(msg, n, "%s file '%s' cannot be read: %s", names[i], paths[i], strerror(errno));
      return CR_SSL_CONNECTION_ERROR;
    }
    close(fd);
  }
  return 0;
}

/* What a failed TLS handshake checked, for the user to fix ("" when nothing). */
static void tls_hint(const mocdc_connopts *o, char *out, size_t n) {
  const char *ca = o->ssl_ca ? o->ssl_ca : "a CA in " SYSTEM_CAPATH;
  const char *host = o->unix_socket ? "localhost" : (o->host ? o->host : "localhost");
  out[0] = 0;
  if (o->ssl_mode == MOCDC_SSL_VERIFY_IDENTITY)
    snprintf(out, n, " (ssl-mode verify_identity: check that %s%s signed the server's certificate and that it "
             "names %s)", o->ssl_ca ? "ssl-ca " : "", ca, host);
  else if (o->ssl_mode == MOCDC_SSL_VERIFY_CA)
    snprintf(out, n, " (ssl-mode verify_ca: check that ssl-ca %s signed the server's certificate)", ca);
  else if (o->ssl_ca)
    snprintf(out, n, " (ssl-mode require with ssl-ca checks the server's certificate as verify_ca does: check "
             "that ssl-ca %s signed it)", o->ssl_ca);
}

unsigned mocdc_connect(MYSQL *my, const mocdc_connopts *o, char *msg, size_t n) {
  msg[0] = 0;
  if (o->ssl_mode == MOCDC_SSL_VERIFY_CA && !o->ssl_ca) {
    snprintf(msg, n, "ssl-mode verify_ca needs ssl-ca (the CA certificate file)");
    return CR_SSL_CONNECTION_ERROR;
  }
  if (o->ssl_mode == MOCDC_SSL_DISABLE && (o->ssl_ca || o->ssl_cert || o->ssl_key)) {
    snprintf(msg, n, "%s is given but ssl-mode is disable: add ssl-mode=require, verify_ca or verify_identity",
             o->ssl_ca ? "ssl-ca" : o->ssl_cert ? "ssl-cert" : "ssl-key");
    return CR_SSL_CONNECTION_ERROR;
  }
  unsigned err = check_files(o, msg, n);
  if (err) return err;
  if (!mysql_real_connect(my, o->host, o->user, o->password, o->database, (unsigned)o->port, o->unix_socket, 0)) {
    err = mysql_errno(my);
    const char *m = mysql_error(my);
    size_t mlen = strlen(m);
    int sys = 0;
    if ((err == CR_CONNECTION_ERROR || err == CR_CONN_HOST_ERROR) && !o->unix_socket && mlen > 6 &&
        !strcmp(m + mlen - 6, " (115)"))
      sys = probe_tcp(o->host, o->port, o->connect_timeout);
    char hint[600] = "";
    if (err == CR_SSL_CONNECTION_ERROR) tls_hint(o, hint, sizeof hint);
    if (sys)
      snprintf(msg, n, "%.*s (%d \"%s\")", (int)(mlen - 6), m, sys, strerror(sys));
    else
      snprintf(msg, n, "%s%s", m, hint);
    return err ? err : CR_UNKNOWN_ERROR;
  }
  if (o->ssl_mode > MOCDC_SSL_DISABLE && !mysql_get_ssl_cipher(my)) {
    snprintf(msg, n, "ssl-mode %s needs TLS, but the server does not offer it", o->ssl_mode_name);
    return CR_SSL_CONNECTION_ERROR;
  }
  return 0;
}
