#!/bin/bash
# examples/full_copy_demo.sh — seed 000 as a pipeline: installs what is missing, builds mocdc,
# starts two throwaway MariaDB servers on 127.0.0.1 (source with a row binlog, sink), loads the
# seed's source_db.orders rows, runs pipelines/full_copy.lua, prints the sink table, stops the servers.
set -e
MOCDC_ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$MOCDC_ROOT/scripts/deps.sh"
mocdc_install_deps
mocdc_build
. "$MOCDC_ROOT/scripts/mariadb.sh"
trap mdb_stop_all EXIT INT TERM
SRC_PORT=$(mdb_free_port); mdb_start source "$SRC_PORT" binlog
SINK_PORT=$(mdb_free_port); mdb_start sink "$SINK_PORT"
echo "== source MariaDB on 127.0.0.1:$SRC_PORT, sink MariaDB on 127.0.0.1:$SINK_PORT"
mdb source <<'SQL'
CREATE DATABASE source_db;
CREATE TABLE source_db.orders (
    order_id INT PRIMARY KEY,
    customer_id INT,
    order_date DATETIME,
    amount DECIMAL(10, 2),
    status VARCHAR(20)
);
INSERT INTO source_db.orders (order_id, customer_id, order_date, amount, status) VALUES
 (1, 101, '2024-01-15 14:30:00', 99.99, 'Shipped'),
 (2, 102, '2024-02-10 10:00:00', 149.50, 'Delivered'),
 (3, 103, '2024-03-05 16:45:00', 75.00, 'Processing'),
 (4, 104, '2024-04-20 09:15:00', 200.00, 'Shipped'),
 (5, 105, '2024-05-12 14:00:00', 49.99, 'Delivered');
SQL
mdb sink <<'SQL'
CREATE DATABASE analytics_db;
CREATE TABLE analytics_db.orders_backup (
    order_id INT PRIMARY KEY,
    customer_id INT,
    order_date DATETIME,
    amount DECIMAL(10, 2),
    status VARCHAR(20)
);
SQL
export MOCDC_HOME="$MDB_TMP/mocdc-home"
echo "== mocdc run pipelines/full_copy.lua"
"$MOCDC_ROOT/build/mocdc" run "$MOCDC_ROOT/pipelines/full_copy.lua" \
  --set source_uri="mysql://root:111@127.0.0.1:$SRC_PORT" \
  --set sink_uri="mysql://root:111@127.0.0.1:$SINK_PORT" \
  --set tables=source_db.orders:analytics_db.orders_backup
echo "== select * from analytics_db.orders_backup;   (sink)"
mdb sink -t -e "select * from analytics_db.orders_backup"
