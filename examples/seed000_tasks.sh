#!/bin/bash
# examples/seed000_tasks.sh — seed 000's mo_cdc walkthrough, command for command, with mocdc
# (./mo_cdc -> mocdc), MariaDB in both roles on throwaway servers:
#   full copy -> insert/delete/update -> pause -> rows inserted while paused -> resume.
# Run from anywhere: examples/seed000_tasks.sh   (builds mocdc if needed)
set -e
MOCDC_ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$MOCDC_ROOT/scripts/deps.sh"
mocdc_install_deps
mocdc_build
. "$MOCDC_ROOT/scripts/mariadb.sh"
export MOCDC_HOME="$MDB_TMP/mocdc-home"
cleanup() { "$MOCDC_ROOT/build/mocdc" task drop --all --source-uri "$SRC" >/dev/null 2>&1 || true; mdb_stop_all; }
trap cleanup EXIT INT TERM
P1=$(mdb_free_port); mdb_start source "$P1" binlog
P2=$(mdb_free_port); mdb_start sink "$P2"
SRC="mysql://root:111@127.0.0.1:$P1"
SINK="mysql://root:111@127.0.0.1:$P2"
mocdc() { echo "> mocdc $*" | sed 's/:111@/:******@/g'; "$MOCDC_ROOT/build/mocdc" "$@"; }
show_sink() { echo "mysql> select * from analytics_db.orders_backup;"; mdb sink -t -e "select * from analytics_db.orders_backup order by order_id"; }
# wait (up to 30 s) until the sink table holds exactly the source's rows
settle() {
  local q="SELECT COUNT(*), COALESCE(SUM(CRC32(CONCAT_WS('#', order_id, customer_id, order_date, amount, status))), 0)"
  local i=0
  while [ $i -lt 300 ]; do
    a=$(mdb source -N -e "$q FROM source_db.orders" 2>/dev/null || true)
    b=$(mdb sink -N -e "$q FROM analytics_db.orders_backup" 2>/dev/null || true)
    [ -n "$a" ] && [ "$a" = "$b" ] && return 0
    sleep 0.1; i=$((i + 1))
  done
  echo "(sink not in sync after 30 s)"
}

mdb source <<'SQL'
CREATE DATABASE source_db;
CREATE TABLE source_db.orders (order_id INT PRIMARY KEY, customer_id INT, order_date DATETIME,
  amount DECIMAL(10, 2), status VARCHAR(20));
INSERT INTO source_db.orders (order_id, customer_id, order_date, amount, status) VALUES
 (1, 101, '2024-01-15 14:30:00', 99.99, 'Shipped'),
 (2, 102, '2024-02-10 10:00:00', 149.50, 'Delivered'),
 (3, 103, '2024-03-05 16:45:00', 75.00, 'Processing'),
 (4, 104, '2024-04-20 09:15:00', 200.00, 'Shipped'),
 (5, 105, '2024-05-12 14:00:00', 49.99, 'Delivered');
SQL
mdb sink -e "CREATE DATABASE analytics_db; CREATE TABLE analytics_db.orders_backup (order_id INT PRIMARY KEY,
  customer_id INT, order_date DATETIME, amount DECIMAL(10, 2), status VARCHAR(20));"

mocdc task create --task-name "task1" --source-uri "$SRC" --sink-type "mysql" --sink-uri "$SINK" \
  --tables "source_db.orders:analytics_db.orders_backup" --level "account" --account "sys"
settle
mocdc task show --task-name "task1" --source-uri "$SRC"
show_sink

echo "== incremental: insert 6, delete 6, update 4 on the source"
mdb source -e "INSERT INTO source_db.orders VALUES (6, 106, '2024-10-29 12:00:00', 150.00, 'New');
  DELETE FROM source_db.orders WHERE order_id = 6; UPDATE source_db.orders SET status = 'Delivered' WHERE order_id = 4;"
settle
show_sink

mocdc task pause --task-name "task1" --source-uri "$SRC"
echo "== while paused: insert 11, 12, 13 on the source"
mdb source -e "INSERT INTO source_db.orders VALUES (11, 111, '2024-06-15 08:30:00', 250.75, 'Processing');
  INSERT INTO source_db.orders VALUES (12, 112, '2024-07-22 15:45:00', 399.99, 'Shipped');
  INSERT INTO source_db.orders VALUES (13, 113, '2024-08-30 10:20:00', 599.99, 'Delivered');"
sleep 1
show_sink
mocdc task resume --task-name "task1" --source-uri "$SRC"
settle
show_sink
mocdc task show --task-name "task1" --source-uri "$SRC"
