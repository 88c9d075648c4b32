#!/bin/bash
# Throwaway MariaDB servers on 127.0.0.1 for the demo and the benches (the
# specs use spec/helpers/mariadb.lua). Never touches the system service.
#   mdb_start NAME PORT [binlog]   ->  datadir $MDB_TMP/NAME, root password $MDB_PW
#   mdb NAME [mariadb client args]  ->  client connected to NAME
#   mdb_stop_all
MDB_PW=${MDB_PW:-111}
MDB_TMP=${MDB_TMP:-$(mktemp -d /tmp/mocdc-mdb-XXXXXX)}
mdb_free_port() {  # a port nothing listens on (bash /dev/tcp probe)
  while :; do
    p=$((20000 + RANDOM % 20000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}
mdb_start() {
  name=$1 port=$2 binlog=$3
  dir=$MDB_TMP/$name
  mkdir -p "$dir"
  mariadb-install-db --no-defaults --datadir="$dir/data" --auth-root-authentication-method=normal \
    --skip-test-db --user="$(id -un)" >"$dir/install.log" 2>&1 || { cat "$dir/install.log"; return 1; }
  extra=""
  [ "$binlog" = binlog ] && extra="--log-bin=$dir/data/mysql-bin --binlog-format=ROW --binlog-row-image=FULL --binlog-row-metadata=FULL --server-id=$port"
  mariadbd --no-defaults --datadir="$dir/data" --port="$port" --bind-address=127.0.0.1 \
    --socket="$dir/mysqld.sock" --pid-file="$dir/mysqld.pid" --user="$(id -un)" \
    --tmpdir="$dir" --skip-name-resolve --local-infile=1 --max-allowed-packet=64M --innodb-buffer-pool-size=256M \
    --innodb-log-file-size=256M --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
    $extra $MDB_EXTRA >"$dir/error.log" 2>&1 &
  echo $! >"$dir/pid"
  i=0
  until mariadb-admin --no-defaults --socket="$dir/mysqld.sock" -uroot ping >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt 300 ] && { tail -20 "$dir/error.log"; return 1; }; sleep 0.1
  done
  mariadb --no-defaults --socket="$dir/mysqld.sock" -uroot -e \
    "ALTER USER 'root'@'localhost' IDENTIFIED BY '$MDB_PW'; CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '$MDB_PW'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
  echo "$port" >"$dir/port"
}
mdb() {
  name=$1; shift
  MYSQL_PWD=$MDB_PW mariadb --no-defaults -h127.0.0.1 -P"$(cat "$MDB_TMP/$name/port")" -uroot "$@"
}
mdb_stop_all() {  # safe under set -e (used in EXIT traps)
  local p
  for p in "$MDB_TMP"/*/pid; do
    [ -f "$p" ] && { kill "$(cat "$p")" 2>/dev/null || true; }
  done
  for p in "$MDB_TMP"/*/pid; do
    [ -f "$p" ] || continue
    local i=0
    while kill -0 "$(cat "$p")" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill -9 "$(cat "$p")" 2>/dev/null || true
  done
  rm -rf "$MDB_TMP" || true
  return 0
}
