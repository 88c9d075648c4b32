#!/bin/bash
# bench/snapshot_diff.sh — snapshot diffing (issue 5): what one iteration of
# pipelines/snapshot_sync.lua costs on a 1,000,000-row table, against the
# full copy of the same table.
#
# Starts two throwaway MariaDB servers on 127.0.0.1 (no binlog), builds
# bench.t (ROWS rows: id INT PK, k INT, c CHAR(120), pad CHAR(60),
# amount DECIMAL(12,2), created DATETIME), then times `mocdc run
# pipelines/snapshot_sync.lua --once` for:
#   full copy            first run: LOAD DATA copy + the first object list
#   no change            CHECKSUM TABLE gate only
#   no change, no gate   every chunk checksummed on the source (full_check=0)
#   0.1% / 1% clustered  updates of consecutive ids (recent rows, the usual case)
#   1% clustered, 1 conn the same with checksumParallel = 1 (one source connection)
#   1% scattered         updates of random ids (every chunk changes: the worst case)
#   inserts + deletes    1,000 rows appended, 1,000 deleted
# the same for bench.u, bench.t plus an indexed `updated TIMESTAMP(6) ... ON
# UPDATE CURRENT_TIMESTAMP(6)` column, diffed with update_column=updated (the
# changed rows by an index range, deletes by row counts: no checksums),
# and the same for bench.v, a copy of bench.t created WITH SYSTEM VERSIONING:
# there the changed keys come from the table's history (no checksums).
# Each line shows the wall time, the time of the diff itself, the chunks
# changed, and the rows and bytes fetched from both servers (rows of changed
# chunks only; chunk summaries are a few bytes each). Every step ends with
# source and sink compared (CHECKSUM TABLE EXTENDED). Exits non-zero on a
# mismatch. Servers are stopped on exit.
#
# Knobs: ROWS (1000000), CHUNK_ROWS (1000), MOCDC_BIN (default: build, then build/mocdc),
# BENCH_APPEND=1 appends the results as a section of bench/RESULTS.md.
set -eo pipefail
MOCDC_ROOT=$(cd "$(dirname "$0")/.." && pwd)
. "$MOCDC_ROOT/scripts/deps.sh"
mocdc_install_deps
[ -n "${MOCDC_BIN:-}" ] || mocdc_build    # MOCDC_BIN: benchmark that binary as it is
MOCDC=${MOCDC_BIN:-$MOCDC_ROOT/build/mocdc}
ROWS=${ROWS:-1000000}
CHUNK_ROWS=${CHUNK_ROWS:-1000}

export MDB_TMP=${MDB_TMP:-$(mktemp -d /tmp/mocdc-bench-XXXXXX)}
export MDB_EXTRA="--innodb-buffer-pool-size=2G --skip-log-bin ${BENCH_MDB_EXTRA:-}"  # 3 tables of 1M rows stay cached
. "$MOCDC_ROOT/scripts/mariadb.sh"
bench_cleanup() { rc=$?; set +e; mdb_stop_all; exit $rc; }
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

SRC_PORT=$(mdb_free_port); mdb_start source "$SRC_PORT" ""
SINK_PORT=$(mdb_free_port); mdb_start sink "$SINK_PORT" ""
SRC_URI="mysql://root:$MDB_PW@127.0.0.1:$SRC_PORT"
SINK_URI="mysql://root:$MDB_PW@127.0.0.1:$SINK_PORT"
q() { mdb "$1" -N -B -e "$2"; }

OUT=$MDB_TMP/results.md
say() { echo "$*" | tee -a "$OUT"; }

say "### machine"
say "nproc $(nproc), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); mariadbd $(mariadbd --version | sed 's/^.*Ver \([^ ]*\).*/\1/'); mocdc $(git -C "$MOCDC_ROOT" rev-parse --short HEAD 2>/dev/null)$(git -C "$MOCDC_ROOT" diff --quiet 2>/dev/null || echo '+dirty')"
say "load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared: both servers and mocdc run on these cores)"
say ""

echo "building bench.t ($ROWS rows)..." >&2
q source "CREATE DATABASE bench"
for T in t u v; do
  V=""; [ "$T" = v ] && V="WITH SYSTEM VERSIONING"
  U=""; [ "$T" = u ] && U=", updated TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), KEY (updated)"
  mdb source bench -e "CREATE TABLE $T (id INT PRIMARY KEY, k INT NOT NULL, c CHAR(120) NOT NULL, pad CHAR(60) NOT NULL,
    amount DECIMAL(12,2), created DATETIME $U) $V;
    INSERT INTO $T (id, k, c, pad, amount, created) SELECT seq, seq * 7 % 100000, REPEAT(CHAR(65 + seq % 26), 100),
      'pad-pad-pad', seq / 100, '2024-01-01 00:00:00' + INTERVAL seq SECOND FROM seq_1_to_$ROWS;"
done

run_step() {  # name, extra args...; prints one result line
  local name=$1; shift
  # bench.u, bench.v: let the changes age past changeScanMargin (2 s) before the
  # iteration, as between the iterations of a running pipeline (a change made
  # less than 2 s before an iteration is read again by the next one)
  [ "$TBL" != t ] && [ "$name" != "full copy (+ first object list)" ] && sleep 2.1
  local log=$MDB_TMP/step.log t0 t1
  t0=$(date +%s.%N)
  "$MOCDC" run "$MOCDC_ROOT/pipelines/snapshot_sync.lua" --verbose --once --set source_uri="$SRC_URI" \
    --set sink_uri="$SINK_URI" --set tables=bench.$TBL:bench_copy.$TBL --set checkpoint="$CP" \
    --set chunk_rows="$CHUNK_ROWS" ${UPD:+--set update_column=updated} "$@" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
  t1=$(date +%s.%N)
  local wall diffs chunks rows bytes
  wall=$(echo "$t1 - $t0" | bc)
  if grep -q "copied bench.$TBL" "$log"; then
    diffs=$(sed -n "s/.*copied bench.$TBL -> bench_copy.$TBL: [0-9,]* rows in \([0-9.]*\) s.*/\1/p" "$log" | tail -1)
    chunks="-"; rows="$ROWS (copy)"; bytes="-"
  elif grep -q "unchanged (checksum gate)" "$log"; then
    diffs=$(sed -n 's/.*unchanged (checksum gate) in \([0-9.]*\) s.*/\1/p' "$log" | tail -1)
    chunks="0 (gate)"; rows=0; bytes=0
  else
    local line
    line=$(grep "diff bench.$TBL -> bench_copy.$TBL:" "$log" | tail -1)
    diffs=$(echo "$line" | sed -n 's/.* in \([0-9.]*\) s$/\1/p')
    chunks=$(echo "$line" | sed -n 's/.*: \([0-9]* of [0-9]*\) chunks changed.*/\1/p')
    [ -n "$chunks" ] || chunks="$(echo "$line" | sed -n 's/.*: \([0-9]*\) keys changed.*/\1/p') keys"
    case "$line" in *"keys updated"*) chunks="$(echo "$line" | sed -n 's/.*: \([0-9]*\) keys updated.*/\1/p') keys";; esac
    rows=$(echo "$line" | sed -n 's/.*fetched \([0-9]*\) rows.*/\1/p')
    bytes=$(echo "$line" | sed -n 's/.*rows (\([0-9,]*\) bytes).*/\1/p')
  fi
  local a b
  local cols="id, k, c, pad, amount, created"
  [ -n "$UPD" ] && cols="$cols, updated"
  a=$(q source "SELECT COUNT(*), SUM(CRC32(CONCAT_WS('#', $cols))) FROM bench.$TBL")
  b=$(q sink "SELECT COUNT(*), SUM(CRC32(CONCAT_WS('#', $cols))) FROM bench_copy.$TBL")
  [ "$a" = "$b" ] || { echo "MISMATCH after '$name': source $a, sink $b" >&2; exit 1; }
  printf "| %-36s | %8.2f | %8s | %-14s | %14s | %12s |\n" "$name" "$wall" "${diffs:-?}" "$chunks" "$rows" "$bytes" | tee -a "$OUT"
  echo "$wall" >"$MDB_TMP/last_wall"
  echo "${diffs:-0}" >"$MDB_TMP/last_diff"
}

for TBL in t u v; do
CP=$MDB_TMP/checkpoint-$TBL
UPD=""; [ "$TBL" = u ] && UPD=1
if [ "$TBL" = t ]; then
  say "### bench.t: $ROWS rows, chunks of $CHUNK_ROWS rows, CRC32 chunk sums on 2 source connections"
elif [ "$TBL" = u ]; then
  say "### bench.u: the same rows plus \`updated TIMESTAMP(6) ... ON UPDATE CURRENT_TIMESTAMP(6)\` (indexed), diffed with update_column=updated"
else
  say "### bench.v: the same table WITH SYSTEM VERSIONING (changed keys read from its history)"
fi
say ""
say "| step                                 | wall (s) | diff (s) | chunks changed | rows fetched   | bytes fetched |"
say "|--------------------------------------|----------|----------|----------------|----------------|--------------|"
run_step "full copy (+ first object list)"
FULL=$(cat "$MDB_TMP/last_wall"); FULL_D=$(cat "$MDB_TMP/last_diff")
run_step "no change"
NOCHANGE=$(cat "$MDB_TMP/last_wall")
[ "$TBL" = t ] && run_step "no change, gate off (all chunk sums)" --set full_check=0
q source "UPDATE bench.$TBL SET k = k + 1 WHERE id BETWEEN 500001 AND $((500000 + ROWS / 1000))"
run_step "0.1% clustered updates"
q source "UPDATE bench.$TBL SET k = k + 1 WHERE id BETWEEN 200001 AND $((200000 + ROWS / 100))"
run_step "1% clustered updates"
ONEPCT=$(cat "$MDB_TMP/last_wall"); ONEPCT_D=$(cat "$MDB_TMP/last_diff")
if [ "$TBL" = t ]; then
  q source "UPDATE bench.$TBL SET k = k + 1 WHERE id BETWEEN 400001 AND $((400000 + ROWS / 100))"
  run_step "1% clustered, one connection" --set parallel=1
fi
q source "UPDATE bench.$TBL SET k = k + 1 WHERE id IN (SELECT id FROM (SELECT id FROM bench.$TBL ORDER BY RAND(7) LIMIT $((ROWS / 100))) x)"
run_step "1% scattered updates"
SCATTER=$(cat "$MDB_TMP/last_wall")
mdb source bench -e "INSERT INTO bench.$TBL (id, k, c, pad, amount, created) SELECT $ROWS + seq, 1, 'new', 'new', 1, NOW() FROM seq_1_to_1000; DELETE FROM bench.$TBL WHERE id BETWEEN 700001 AND 701000"
run_step "1,000 inserts + 1,000 deletes"
run_step "no change (after the changes)"
say ""
say "bench.$TBL: no-change iteration ${NOCHANGE} s (target < 1 s); 1% clustered ${ONEPCT} s = $(echo "scale=3; $ONEPCT / $FULL" | bc) of the full copy's ${FULL} s (wall / wall), the iteration alone ${ONEPCT_D} s = $(echo "scale=3; $ONEPCT_D / $FULL_D" | bc) of the copy alone (${FULL_D} s); 1% scattered ${SCATTER} s = $(echo "scale=3; $SCATTER / $FULL" | bc) (target <= 0.1)"
say ""
done

if [ "${BENCH_APPEND:-0}" = 1 ]; then
  { echo; echo "## Snapshot diff (issue 5) — bench/snapshot_diff.sh, $(date -u +%Y-%m-%d)"; echo; cat "$OUT"; } >>"$MOCDC_ROOT/bench/RESULTS.md"
  echo "appended to bench/RESULTS.md" >&2
fi
