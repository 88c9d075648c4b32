#!/bin/bash
# bench/full_copy.sh — full copy throughput: mocdc vs the reference tools.
#
# Starts two throwaway MariaDB servers on 127.0.0.1 (source, sink) with the
# same settings, builds source_db.orders (1,000,000 rows, seed 000's columns)
# and source_db.wide (500,000 rows of mixed types), then, for each table and on
# the same servers, times:
#   mocdc       build/mocdc run pipelines/full_copy.lua ... (fresh target db)
#   dump        mariadb-dump --single-transaction source_db T | mariadb bench_dump
#   load        SELECT ... INTO OUTFILE (source) + LOAD DATA INFILE (sink)
# and verifies every copy against the source (row count + CRC32 over all
# columns, and CHECKSUM TABLE ... EXTENDED when the DDLs are identical).
# Exits non-zero on any mismatch. Servers are stopped on exit.
#
# Knobs (environment): ORDERS_ROWS (1000000), WIDE_ROWS (500000),
# CHUNK_SIZE (mocdc --set chunk_size, default: the pipeline's), BENCH_TABLES
# ("orders wide"), BENCH_METHODS ("mocdc dump load"), BENCH_MDB_EXTRA (extra
# mariadbd flags for BOTH servers), MOCDC_BIN (default build/mocdc).
set -eo pipefail
BENCH_T0=$(date +%s.%N)
MOCDC_ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$MOCDC_ROOT/scripts/deps.sh"
mocdc_install_deps
# /usr/bin/time -v measures mocdc's peak RSS (Debian package "time")
if ! [ -x /usr/bin/time ]; then
  echo "installing: time" >&2
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q --no-install-recommends time >/dev/null ||
    { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends time >/dev/null; }
fi
mocdc_build
MOCDC=${MOCDC_BIN:-$MOCDC_ROOT/build/mocdc}

ORDERS_ROWS=${ORDERS_ROWS:-1000000}
WIDE_ROWS=${WIDE_ROWS:-500000}
BENCH_TABLES=${BENCH_TABLES:-"orders wide"}
BENCH_METHODS=${BENCH_METHODS:-"mocdc dump load"}

export MDB_TMP=${MDB_TMP:-$(mktemp -d /tmp/mocdc-bench-XXXXXX)}
XFER=$MDB_TMP/xfer            # INTO OUTFILE / LOAD DATA INFILE directory, readable by both servers
mkdir -p "$XFER"
# Identical for both servers, on top of scripts/mariadb.sh's flags (no binlog on either).
export MDB_EXTRA="--secure-file-priv=$XFER --innodb-buffer-pool-size=1G --innodb-flush-log-at-trx-commit=1 --innodb-doublewrite=1 --skip-log-bin ${BENCH_MDB_EXTRA:-}"
. "$MOCDC_ROOT/scripts/mariadb.sh"
bench_cleanup() { rc=$?; set +e; mdb_stop_all; exit $rc; }   # errexit must not cut the cleanup short
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

SRC_PORT=$(mdb_free_port); mdb_start source "$SRC_PORT" ""
SINK_PORT=$(mdb_free_port); mdb_start sink "$SINK_PORT" ""
SRC_URI="mysql://root:$MDB_PW@127.0.0.1:$SRC_PORT"
SINK_URI="mysql://root:$MDB_PW@127.0.0.1:$SINK_PORT"

q() { mdb "$1" --default-character-set=utf8mb4 -N -B -e "$2"; }   # one value / rows, tab separated, no headers

# ---- machine and settings ----------------------------------------------------
echo "== machine"
echo "nproc: $(nproc)   RAM: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)   cpu: $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1)"
echo "kernel: $(uname -r)   $(. /etc/os-release; echo "$PRETTY_NAME")"
echo "mariadbd: $(mariadbd --version | sed 's/^.*Ver //')"
echo "mariadb-dump: $(mariadb-dump --version | sed 's/^.*Ver //')"
echo "mocdc: $("$MOCDC" --version 2>/dev/null | paste -sd" " || echo '?') ($(git -C "$MOCDC_ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$MOCDC_ROOT" diff --quiet 2>/dev/null || echo '+dirty'))"
echo "note: both servers and the copying client share these $(nproc) cores; both servers are on 127.0.0.1 (TCP)"
echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg); other mariadbd processes on this machine: $(pgrep -x mariadbd | grep -vxF -e "$(cat "$MDB_TMP/source/pid")" -e "$(cat "$MDB_TMP/sink/pid")" | wc -l)"
echo "(the 'cpu:' lines below split each timed step's CPU between the two servers, the client and the rest of the machine)"
echo
echo "== server settings (source on 127.0.0.1:$SRC_PORT, sink on 127.0.0.1:$SINK_PORT, identical flags)"
for s in source sink; do
  echo "$s: $(tr '\0' ' ' <"/proc/$(cat "$MDB_TMP/$s/pid")/cmdline")"
done
VARS="'innodb_buffer_pool_size','innodb_log_file_size','innodb_log_buffer_size','innodb_flush_log_at_trx_commit','innodb_doublewrite','innodb_flush_method','innodb_io_capacity','innodb_io_capacity_max','innodb_max_dirty_pages_pct','innodb_adaptive_hash_index','innodb_autoinc_lock_mode','sync_binlog','log_bin','max_allowed_packet','net_buffer_length','local_infile','secure_file_priv','character_set_server','collation_server','sql_mode','time_zone','system_time_zone','bulk_insert_buffer_size'"
paste <(q source "SELECT LOWER(variable_name), variable_value FROM information_schema.global_variables WHERE variable_name IN ($VARS) ORDER BY 1") \
      <(q sink "SELECT variable_value FROM information_schema.global_variables WHERE variable_name IN ($VARS) ORDER BY variable_name") |
  awk -F'\t' 'BEGIN { printf "  %-32s %-28s %s\n", "variable", "source", "sink" }
              { printf "  %-32s %-28s %s%s\n", $1, $2, $3, ($2 == $3 ? "" : "   <-- DIFFERENT"); if ($2 != $3) bad = 1 }
              END { exit bad }' || { echo "server settings differ" >&2; exit 1; }
echo

# ---- data --------------------------------------------------------------------
echo "== building source_db.orders ($ORDERS_ROWS rows) and source_db.wide ($WIDE_ROWS rows) with the sequence engine"
t0=$(date +%s.%N)
mdb source --default-character-set=utf8mb4 <<SQL
SET SESSION time_zone = '+00:00';
CREATE DATABASE source_db;
USE source_db;
CREATE TABLE source_db.orders (
    order_id INT PRIMARY KEY,
    customer_id INT,
    order_date DATETIME,
    amount DECIMAL(10, 2),
    status VARCHAR(20)
);
INSERT INTO source_db.orders (order_id, customer_id, order_date, amount, status)
SELECT seq,
       1 + CRC32(CONCAT('c', seq)) % 50000,
       TIMESTAMP('2021-01-01 00:00:00') + INTERVAL (CRC32(CONCAT('t', seq)) % 126230400) SECOND,
       IF(seq % 499 = 0, NULL, ROUND(5 + (CRC32(CONCAT('a', seq)) % 49500) / 100 * (1 + (seq % 3 = 0) * 3), 2)),
       IF(seq % 997 = 0, NULL, ELT(1 + CRC32(CONCAT('s', seq)) % 6, 'Pending', 'Processing', 'Shipped',
                                   'Delivered', 'Cancelled', 'Returned'))
FROM seq_1_to_$ORDERS_ROWS;
CREATE TABLE source_db.wide (
    id INT UNSIGNED NOT NULL PRIMARY KEY,
    c_tiny TINYINT,
    c_small_u SMALLINT UNSIGNED,
    c_medium MEDIUMINT,
    c_int INT,
    c_int_u INT UNSIGNED,
    c_big BIGINT,
    c_big_u BIGINT UNSIGNED,
    c_dec DECIMAL(20, 6),
    c_double DOUBLE,
    c_date DATE,
    c_dt6 DATETIME(6),
    c_ts TIMESTAMP NULL DEFAULT NULL,
    c_vc VARCHAR(255) CHARACTER SET utf8mb4,
    c_text TEXT,
    c_vbin VARBINARY(64),
    c_blob BLOB,
    c_enum ENUM('new', 'paid', 'shipped', 'delivered', 'returned'),
    c_json JSON
) DEFAULT CHARSET = utf8mb4;
INSERT INTO source_db.wide
SELECT seq,
       IF(seq % 17 = 0, NULL, CAST(CRC32(CONCAT('k', seq)) % 256 AS SIGNED) - 128),
       CRC32(CONCAT('s', seq)) % 65536,
       CAST(CRC32(CONCAT('m', seq)) % 16777216 AS SIGNED) - 8388608,
       CAST(CRC32(CONCAT('i', seq)) AS SIGNED) - 2147483648,
       IF(seq % 19 = 0, NULL, CRC32(CONCAT('u', seq))),
       (CAST(CRC32(CONCAT('b', seq)) AS SIGNED) - 2147483648) * 4294967296 + CAST(CRC32(CONCAT('B', seq)) AS SIGNED),
       IF(seq % 23 = 0, NULL, CAST(CRC32(CONCAT('x', seq)) AS UNSIGNED) * 4294967296 + CRC32(CONCAT('y', seq))),
       IF(seq % 29 = 0, NULL, CAST((CAST(CRC32(CONCAT('d', seq)) AS SIGNED) - 2147483648) * 1000 / 997 + seq / 1000000 AS DECIMAL(20, 6))),
       IF(seq % 31 = 0, NULL, (CAST(CRC32(CONCAT('f', seq)) AS SIGNED) - 2147483648) / 7 * PI() * POW(10, CAST(seq % 41 AS SIGNED) - 20)),
       DATE('1970-01-01') + INTERVAL (CRC32(CONCAT('D', seq)) % 40000) DAY,
       IF(seq % 37 = 0, NULL, TIMESTAMP('1990-01-01') + INTERVAL (CRC32(CONCAT('T', seq)) % 1262304000) SECOND
                              + INTERVAL (seq * 7919 % 1000000) MICROSECOND),
       IF(seq % 41 = 0, NULL, FROM_UNIXTIME(100000000 + CRC32(CONCAT('z', seq)) % 2000000000)),
       CONCAT(ELT(1 + seq % 7, 'Zoë Åström', '山田 太郎', 'José Müller-Lüdenscheidt', 'Ωmega «quoted» ''x''',
                  'emoji 🚀🎉 ok', 'tab\there', 'plain ascii name'), ' #', seq,
              IF(seq % 101 = 0, ' back\\\\slash\nnew line', '')),
       IF(seq % 43 = 0, NULL, REPEAT(CONCAT(MD5(seq), ' lorem ipsum; '), 1 + seq % 6)),
       UNHEX(MD5(CONCAT('v', seq))),
       IF(seq % 47 = 0, NULL, UNHEX(REPEAT(SHA2(CONCAT('blob', seq), 256), 1 + seq % 3))),
       IF(seq % 53 = 0, NULL, ELT(1 + CRC32(CONCAT('e', seq)) % 5, 'new', 'paid', 'shipped', 'delivered', 'returned')),
       IF(seq % 59 = 0, NULL, JSON_OBJECT('id', seq, 'sku', CONCAT('SKU-', seq % 9973), 'qty', seq % 17,
                                          'price', ROUND((CRC32(CONCAT('p', seq)) % 100000) / 100, 2),
                                          'tags', JSON_ARRAY('a', 'b"q', seq % 3 = 0), 'note', 'naïve café'))
FROM seq_1_to_$WIDE_ROWS;
SQL
q source "ANALYZE TABLE source_db.orders, source_db.wide" >/dev/null
t1=$(date +%s.%N)
echo "built in $(awk "BEGIN { printf \"%.1f\", $t1 - $t0 }") s"
q source "SELECT table_name, table_rows, ROUND(data_length / 1048576, 1) AS data_mib
          FROM information_schema.tables WHERE table_schema = 'source_db' ORDER BY 1" |
  awk -F'\t' '{ printf "  source_db.%-8s ~%s rows (InnoDB estimate), %s MiB data\n", $1, $2, $3 }'
echo

# ---- helpers -------------------------------------------------------------------
secs() { awk "BEGIN { printf \"%.3f\", $2 - $1 }"; }
rate() { awk "BEGIN { printf \"%.0f\", $1 / $2 }"; }

# CRC32 checksum expression over every column of source_db.$1 (NULL-aware)
checksum_sql() {
  local cols
  cols=$(q source "SELECT GROUP_CONCAT(CONCAT('\`', column_name, '\`') ORDER BY ordinal_position)
                   FROM information_schema.columns WHERE table_schema = 'source_db' AND table_name = '$1'")
  local isnull
  isnull=$(echo "$cols" | tr ',' '\n' | sed 's/.*/ISNULL(&)/' | paste -sd,)
  echo "SELECT COUNT(*), BIT_XOR(CRC32(CONCAT_WS('#', $cols, $isnull))), SUM(CRC32(CONCAT_WS('#', $cols, $isnull))) FROM"
}
ddl() {  # SHOW CREATE TABLE text (table name is the same everywhere)
  mdb "$1" -N -B -r -e "SHOW CREATE TABLE \`$2\`.\`$3\`" | cut -f2-
}
checksum_table() { q "$1" "CHECKSUM TABLE \`$2\`.\`$3\` EXTENDED" | cut -f2; }

# Wait until both servers have flushed the dirty pages of the previous step, so
# one method does not pay for the background flushing of another.
quiesce() {
  local s i d t0
  t0=$(date +%s.%N)
  for s in source sink; do
    q "$s" "SET GLOBAL innodb_max_dirty_pages_pct = 0; SET GLOBAL innodb_io_capacity_max = 40000; SET GLOBAL innodb_io_capacity = 20000"
  done
  for s in source sink; do
    i=0
    while :; do
      d=$(q "$s" "SELECT variable_value FROM information_schema.global_status WHERE variable_name = 'INNODB_BUFFER_POOL_PAGES_DIRTY'")
      [ "$d" -le 16 ] || [ $i -ge 300 ] && break
      sleep 0.2; i=$((i + 1))
    done
  done
  for s in source sink; do  # back to the stated settings before anything is timed
    q "$s" "SET GLOBAL innodb_max_dirty_pages_pct = DEFAULT; SET GLOBAL innodb_io_capacity = DEFAULT; SET GLOBAL innodb_io_capacity_max = DEFAULT"
  done
  sync
  echo "   (quiesced both servers in $(secs "$t0" "$(date +%s.%N)") s: dirty pages flushed before timing)"
}

# CPU seconds used during a timed step: each server, the client(s), and the
# rest of the machine (other processes: the host is shared, this shows noise).
TCK=$(getconf CLK_TCK)
pcpu() { awk '{ print $14 + $15 }' "/proc/$(cat "$MDB_TMP/$1/pid")/stat"; }
busy() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
cpu_mark() { CPU0=("$(pcpu source)" "$(pcpu sink)" "$(busy)"); }
cpu_report() {  # cpu_report WALL CLIENT_CPU_SECONDS
  local s1 k1 b1
  s1=$(pcpu source); k1=$(pcpu sink); b1=$(busy)
  awk -v s0="${CPU0[0]}" -v s1="$s1" -v k0="${CPU0[1]}" -v k1="$k1" -v b0="${CPU0[2]}" -v b1="$b1" \
      -v t="$TCK" -v w="$1" -v c="$2" -v n="$(nproc)" 'BEGIN {
    src = (s1 - s0) / t; snk = (k1 - k0) / t; all = (b1 - b0) / t; oth = all - src - snk - c
    if (oth < 0) oth = 0
    printf "   cpu: source mariadbd %.2f s, sink mariadbd %.2f s, client %.2f s, rest of machine %.2f s (capacity %d cores x %.2f s = %.2f s)\n",
      src, snk, c, oth, n, w, n * w }'
}
tcpu() { awk -F': ' '/User time/ { u += $2 } /System time/ { s += $2 } END { printf "%.2f", u + s }' "$@"; }

declare -A REF_SUM REF_CK REF_DDL RESULT_SECS RESULT_RSS RESULT_OK
FAIL=0

verify() {  # verify TABLE SINKDB METHOD
  local t=$1 db=$2 m=$3 got ok=OK note=""
  got=$(q sink "SET SESSION time_zone = '+00:00'; $(checksum_sql "$t") \`$db\`.\`$t\`")
  [ "$got" = "${REF_SUM[$t]}" ] || ok=MISMATCH
  local sddl
  sddl=$(ddl sink "$db" "$t")
  if [ "$sddl" = "${REF_DDL[$t]}" ]; then
    local ck
    ck=$(checksum_table sink "$db" "$t")
    if [ "$ck" = "${REF_CK[$t]}" ]; then note="CHECKSUM TABLE EXTENDED $ck = source"
    else note="CHECKSUM TABLE EXTENDED $ck != source ${REF_CK[$t]}"; ok=MISMATCH; fi
  else
    note="DDL differs from the source (CHECKSUM TABLE skipped): $(diff <(echo "${REF_DDL[$t]}") <(echo "$sddl") | grep '^[<>]' | tr '\n' ' ')"
  fi
  echo "   verify: count/crc32 $(echo "$got" | tr '\t' ' ') (source $(echo "${REF_SUM[$t]}" | tr '\t' ' ')) -> $ok; $note"
  RESULT_OK[$t/$m]=$ok
  [ "$ok" = OK ] || FAIL=1
}

run_mocdc() {  # run_mocdc TABLE
  local t=$1 db=bench_mocdc
  q sink "DROP DATABASE IF EXISTS $db; DROP DATABASE IF EXISTS mocdc"
  rm -rf "$MDB_TMP/mocdc-home"
  local extra=()
  [ -n "${CHUNK_SIZE:-}" ] && extra=(--set "chunk_size=$CHUNK_SIZE")
  quiesce
  echo "-- mocdc: $MOCDC run pipelines/full_copy.lua --set source_uri=mysql://root:***@127.0.0.1:$SRC_PORT --set sink_uri=mysql://root:***@127.0.0.1:$SINK_PORT --set tables=source_db.$t:$db.$t ${extra[*]}"
  local t0 t1 rc=0
  cpu_mark
  t0=$(date +%s.%N)
  MOCDC_HOME="$MDB_TMP/mocdc-home" /usr/bin/time -v -o "$MDB_TMP/time-$t.txt" \
    "$MOCDC" run "$MOCDC_ROOT/pipelines/full_copy.lua" --set source_uri="$SRC_URI" --set sink_uri="$SINK_URI" \
    --set tables="source_db.$t:$db.$t" "${extra[@]}" 2>&1 | sed 's/^/   | /' || rc=$?
  t1=$(date +%s.%N)
  [ $rc -eq 0 ] || { echo "mocdc failed (exit $rc)" >&2; FAIL=1; }
  RESULT_SECS[$t/mocdc]=$(secs "$t0" "$t1")
  RESULT_RSS[$t/mocdc]=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$MDB_TMP/time-$t.txt")
  cpu_report "${RESULT_SECS[$t/mocdc]}" "$(tcpu "$MDB_TMP/time-$t.txt")"
  echo "   wall ${RESULT_SECS[$t/mocdc]} s, peak RSS $(awk "BEGIN { printf \"%.1f\", ${RESULT_RSS[$t/mocdc]} / 1024 }") MiB, user $(awk -F': ' '/User time/ { print $2 }' "$MDB_TMP/time-$t.txt") s, sys $(awk -F': ' '/System time/ { print $2 }' "$MDB_TMP/time-$t.txt") s"
  verify "$t" "$db" mocdc
}

run_dump() {  # mariadb-dump --single-transaction | mariadb, restored under another db name
  local t=$1 db=bench_dump
  q sink "DROP DATABASE IF EXISTS $db; CREATE DATABASE $db"
  quiesce
  echo "-- dump: mariadb-dump --single-transaction -h127.0.0.1 -P$SRC_PORT -uroot source_db $t | mariadb -h127.0.0.1 -P$SINK_PORT -uroot $db"
  local t0 t1
  cpu_mark
  t0=$(date +%s.%N)
  MYSQL_PWD=$MDB_PW /usr/bin/time -v -o "$MDB_TMP/time-dump.txt" \
    mariadb-dump --no-defaults --single-transaction -h127.0.0.1 -P"$SRC_PORT" -uroot source_db "$t" |
    MYSQL_PWD=$MDB_PW /usr/bin/time -v -o "$MDB_TMP/time-restore.txt" \
      mariadb --no-defaults -h127.0.0.1 -P"$SINK_PORT" -uroot "$db"
  t1=$(date +%s.%N)
  RESULT_SECS[$t/dump]=$(secs "$t0" "$t1")
  cpu_report "${RESULT_SECS[$t/dump]}" "$(tcpu "$MDB_TMP/time-dump.txt" "$MDB_TMP/time-restore.txt")"
  echo "   wall ${RESULT_SECS[$t/dump]} s (client cpu: mariadb-dump $(tcpu "$MDB_TMP/time-dump.txt") s, mariadb $(tcpu "$MDB_TMP/time-restore.txt") s)"
  verify "$t" "$db" dump
}

run_load() {  # SELECT ... INTO OUTFILE on the source + LOAD DATA INFILE on the sink
  local t=$1 db=bench_load f=$XFER/$1.tsv
  q sink "DROP DATABASE IF EXISTS $db; CREATE DATABASE $db"
  q sink "SET SESSION sql_mode = ''; USE $db; ${REF_DDL[$t]}"
  rm -f "$f"
  quiesce
  echo "-- load: SELECT * INTO OUTFILE '$f' CHARACTER SET binary FROM source_db.$t; LOAD DATA INFILE '$f' INTO TABLE $db.$t CHARACTER SET binary"
  local t0 t1 t2
  cpu_mark
  t0=$(date +%s.%N)
  q source "SELECT * INTO OUTFILE '$f' CHARACTER SET binary FROM source_db.\`$t\`"
  t1=$(date +%s.%N)
  q sink "LOAD DATA INFILE '$f' INTO TABLE $db.\`$t\` CHARACTER SET binary"
  t2=$(date +%s.%N)
  RESULT_SECS[$t/load]=$(secs "$t0" "$t2")
  cpu_report "${RESULT_SECS[$t/load]}" 0
  echo "   wall ${RESULT_SECS[$t/load]} s (OUTFILE $(secs "$t0" "$t1") s, $(du -m "$f" | cut -f1) MiB; LOAD DATA $(secs "$t1" "$t2") s)"
  rm -f "$f"
  verify "$t" "$db" load
}

# ---- runs ----------------------------------------------------------------------
for t in $BENCH_TABLES; do
  echo "== source_db.$t"
  REF_SUM[$t]=$(q source "SET SESSION time_zone = '+00:00'; $(checksum_sql "$t") source_db.\`$t\`")  # also warms the source buffer pool
  REF_DDL[$t]=$(ddl source source_db "$t")
  REF_CK[$t]=$(checksum_table source source_db "$t")
  echo "   source: count/crc32 $(echo "${REF_SUM[$t]}" | tr '\t' ' '), CHECKSUM TABLE EXTENDED ${REF_CK[$t]}"
  for m in $BENCH_METHODS; do
    "run_$m" "$t"
    q sink "DROP DATABASE IF EXISTS bench_$m"   # keep the sink's buffer pool for the next method
  done
  echo
done

# ---- summary -------------------------------------------------------------------
echo "== summary (wall time includes connecting, DDL, all commits; rows/s = source rows / wall seconds)"
printf "%-8s %-22s %10s %9s %10s %10s  %s\n" table method rows seconds rows/s "peak RSS" verify
for t in $BENCH_TABLES; do
  n=$(echo "${REF_SUM[$t]}" | cut -f1)
  for m in $BENCH_METHODS; do
    s=${RESULT_SECS[$t/$m]}
    [ -n "$s" ] || continue
    case $m in mocdc) label="mocdc full_copy";; dump) label="mariadb-dump|mariadb";; load) label="OUTFILE+LOAD DATA";; esac
    rss="-"; [ -n "${RESULT_RSS[$t/$m]:-}" ] && rss=$(awk "BEGIN { printf \"%.1f MiB\", ${RESULT_RSS[$t/$m]} / 1024 }")
    printf "%-8s %-22s %10s %9s %10s %10s  %s\n" "$t" "$label" "$n" "$s" "$(rate "$n" "$s")" "$rss" "${RESULT_OK[$t/$m]}"
  done
done
echo
echo "== ratios (throughput of mocdc / throughput of the reference; > 1 means mocdc is faster)"
for t in $BENCH_TABLES; do
  m=${RESULT_SECS[$t/mocdc]:-}
  [ -n "$m" ] || continue
  d=${RESULT_SECS[$t/dump]:-}; l=${RESULT_SECS[$t/load]:-}
  line="$t:"
  [ -n "$d" ] && line="$line  mocdc / dump|mariadb = $(awk "BEGIN { printf \"%.2f\", $d / $m }")x"
  [ -n "$l" ] && line="$line  mocdc / OUTFILE+LOAD DATA = $(awk "BEGIN { printf \"%.2f\", $l / $m }")x"
  echo "$line"
done
if [ -n "${RESULT_SECS[orders/mocdc]:-}" ] && [ -n "${RESULT_SECS[orders/dump]:-}" ]; then
  r=$(awk "BEGIN { printf \"%.2f\", ${RESULT_SECS[orders/dump]} / ${RESULT_SECS[orders/mocdc]} }")
  mib=$(awk "BEGIN { printf \"%.1f\", ${RESULT_RSS[orders/mocdc]} / 1024 }")
  met=$(awk "BEGIN { print ($r >= 1.3 && $mib < 150) ? \"MET\" : \"NOT MET\" }")
  echo "target (issue 2): orders mocdc >= 1.3x dump|mariadb and peak RSS < 150 MB: ${r}x, $mib MiB -> $met"
fi
echo "(whole script: $(awk "BEGIN { printf \"%.0f\", $(date +%s.%N) - $BENCH_T0 }") s)"
echo
if [ $FAIL -ne 0 ]; then echo "RESULT: MISMATCH or failure (see above)"; exit 1; fi
echo "RESULT: all copies verified OK"
