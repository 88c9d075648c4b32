/* mocdc host: the one connection opener. Every MYSQL handle mocdc opens (queries and
 * cursors in conn.c, the binlog stream in binlog.c; through them sinks and the state
 * store) is configured and connected here, so TLS, the unix socket, timeouts and the
 * charset mean the same on every path. host/README.md documents the fields. */
#ifndef MOCDC_CONNOPTS_H
#define MOCDC_CONNOPTS_H
#include <stddef.h>
#include <mysql.h>
#include "mocdc.h"

enum { MOCDC_SSL_DISABLE = 0, MOCDC_SSL_REQUIRE, MOCDC_SSL_VERIFY_CA, MOCDC_SSL_VERIFY_IDENTITY };

typedef struct mocdc_connopts {
  const char *host, *user, *password, *database, *unix_socket, *charset;
  const char *ssl_mode_name;    /* as given, for messages; NULL = disable */
  int ssl_mode;                 /* MOCDC_SSL_* */
  const char *ssl_ca, *ssl_cert, *ssl_key;
  long port;
  long connect_timeout, read_timeout, write_timeout; /* whole seconds; 0 = Connector/C's default */
  char who[300];                /* user@host:port or user@socket: how messages name the connection */
} mocdc_connopts;

/* Read the connect fields of the table at `idx` (host, port, user, password, database,
 * unix_socket, charset, ssl_mode, ssl_ca, ssl_cert, ssl_key, connect_timeout,
 * read_timeout, write_timeout). Wrong types or values raise "<fn>: ...". The strings
 * point into the table: keep it on the stack while `o` is used. */
void mocdc_connopts_read(lua_State *L, int idx, const char *fn, mocdc_connopts *o);

/* mysql_init() a handle with every option of `o` applied. NULL: out of memory. */
MYSQL *mocdc_connopts_init(const mocdc_connopts *o);

/* mysql_real_connect() with `o`, then enforce ssl_mode. 0 on success; else the errno, and
 * `msg` holds the reason (without "cannot connect to <who>: "), never the password:
 * - ssl-ca / ssl-cert / ssl-key files are checked first ("ssl-ca file '...' cannot be read: ...");
 * - a TLS failure names the mode and what it checks (the CA file, the host name);
 * - "require" on a server without TLS fails (Connector/C only offers TLS);
 * - a failed TCP connect gives the real reason ("(111 \"Connection refused\")"). */
unsigned mocdc_connect(MYSQL *my, const mocdc_connopts *o, char *msg, size_t msglen);

#endif
