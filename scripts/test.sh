#!/bin/bash
# The test command: installs missing Debian 12 packages, builds ./build/mocdc and
# runs every spec (busted inside the mocdc binary, real mariadbd servers started by
# spec/helpers/mariadb.lua -- never the system service). Works from any cwd.
#   ./scripts/test.sh                      # the whole suite
#   ./scripts/test.sh spec/regex_spec.lua  # some files or directories
#   ./scripts/test.sh --filter X FILE      # any busted arguments: one busted process
# Spec files run in parallel, one busted process per file, MOCDC_TEST_JOBS at a time
# (default 3; each file starts its own servers), longest first (times of the last run
# in build/spec-times). Each file's output is printed when it ends.
# Ends with "N passed, N failed"; exits non-zero when anything failed. A pending spec
# counts as failed: nothing in this suite may be skipped.
set -u -o pipefail
# the specs must run the Lua compiled into the binary, not a development copy on disk
unset MOCDC_LUA_PATH
# table records refuse fields mocdc.pipeline.table does not declare (see that module)
export MOCDC_STRICT=1
MOCDC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$MOCDC_ROOT" || exit 1

# shellcheck source=deps.sh
. "$MOCDC_ROOT/scripts/deps.sh"
mocdc_install_deps || { echo "test.sh: installing the Debian packages failed"; echo "0 passed, 1 failed"; exit 1; }

mkdir -p build
if ! { cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >build/cmake.log 2>&1 &&
       make -C build -j"$(nproc)" --no-print-directory >build/make.log 2>&1; }; then
  cat build/cmake.log build/make.log >&2
  echo "test.sh: build failed"
  echo "0 passed, 1 failed"
  exit 1
fi
grep -E 'warning:' build/make.log >&2

[ $# -eq 0 ] && set -- spec/
work=$(mktemp -d /tmp/mocdc-test-log-XXXXXX)
trap 'rm -rf "$work"' EXIT

# busted's summary of one log: "ok fail err pend" (0 0 0 0 plus a failure when it has none)
# -- "12 successes / 1 failure / 0 errors / 2 pending : 3.1 seconds"
summary_of() { # log rc
  local s
  s=$(sed 's/\x1b\[[0-9;]*m//g' "$1" |
    grep -E '^[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' | tail -n 1)
  if [ -z "$s" ]; then
    echo "test.sh: busted ended without a summary (exit $2)" >>"$1"
    echo "0 1 0 0"
    return
  fi
  local ok fail err pend
  read -r ok _ _ fail _ _ err _ _ pend _ <<<"$s"
  # busted itself failed after the summary
  [ "$2" -ne 0 ] && [ $((fail + err)) -eq 0 ] && fail=1
  echo "$ok $fail $err $pend"
}

# one busted process over all arguments: busted options given, or a single file
if [[ " $* " == *" -"* ]] || { [ $# -eq 1 ] && [ -f "$1" ]; }; then
  ./build/mocdc busted --output=utfTerminal "$@" 2>&1 | tee "$work/log"
  rc=${PIPESTATUS[0]}
  read -r ok fail err pend <<<"$(summary_of "$work/log" "$rc")"
  tail -n 1 "$work/log" | grep -q '^test.sh: busted ended without a summary' && tail -n 1 "$work/log"
else
  files=()
  for a in "$@"; do
    if [ -d "$a" ]; then
      while IFS= read -r f; do files+=("$f"); done < <(find "$a" -name '*_spec.lua' | sort)
    elif [ -f "$a" ]; then
      files+=("$a")
    else
      echo "test.sh: no such spec file or directory: $a"
      echo "0 passed, 1 failed"
      exit 1
    fi
  done
  # longest first: the last run's time of each file, else its size (bytes / 200 s)
  times=build/spec-times
  [ -f "$times" ] || : >"$times"
  for f in "${files[@]}"; do
    t=$(awk -v f="$f" '$2 == f { t = $1 } END { print t }' "$times")
    [ -z "$t" ] && t=$(( $(wc -c <"$f") / 200 ))
    echo "$t $f"
  done | sort -rn -k1,1 | awk '{ print $2 }' >"$work/queue"
  n=$(wc -l <"$work/queue")
  jobs=${MOCDC_TEST_JOBS:-3}

  # run_one FILE: busted on that file, its output printed whole when it ends
  run_one() {
    local f=$1 id log t0 rc s
    id=$(printf '%s' "$f" | tr '/.' '__')
    log="$work/$id.log"
    t0=$(date +%s.%N)
    ./build/mocdc busted --output=utfTerminal "$f" >"$log" 2>&1 </dev/null
    rc=$?
    s=$(summary_of "$log" "$rc")
    echo "$s" >"$work/$id.sum"
    awk -v a="$t0" -v b="$(date +%s.%N)" -v f="$f" 'BEGIN { printf "%.1f %s\n", b - a, f }' >"$work/$id.time"
    {
      flock 9
      read -r ok fail err pend <<<"$s"
      printf '=== %s (%s s): ok %s, failures %s, errors %s, pending %s\n' "$f" \
        "$(cut -d' ' -f1 "$work/$id.time")" "$ok" "$fail" "$err" "$pend"
      cat "$log"
    } 9>>"$work/print.lock"
  }
  export -f run_one summary_of
  export work
  echo "test.sh: $n spec files, $jobs at a time"
  tr '\n' '\0' <"$work/queue" | xargs -0 -P "$jobs" -n 1 bash -c 'run_one "$1"' _
  ok=0 fail=0 err=0 pend=0
  while IFS= read -r f; do
    id=$(printf '%s' "$f" | tr '/.' '__')
    if [ -f "$work/$id.sum" ]; then
      read -r a b c d <"$work/$id.sum"
    else
      echo "test.sh: $f did not run"
      a=0 b=1 c=0 d=0
    fi
    ok=$((ok + a)) fail=$((fail + b)) err=$((err + c)) pend=$((pend + d))
    if [ $((b + c + d)) -gt 0 ]; then echo "test.sh: failed: $f"; fi
  done <"$work/queue"
  # keep the times of this run for the next one's order
  cat "$work"/*.time 2>/dev/null | sort -k2 >"$work/new-times"
  awk 'NR == FNR { seen[$2] = 1; print; next } !($2 in seen)' "$work/new-times" "$times" >"$work/merged" &&
    cp "$work/merged" "$times"
  rc=0
fi

failed=$((fail + err))
if [ "$pend" -gt 0 ]; then
  echo "test.sh: $pend pending spec(s) counted as failed (nothing may be skipped)"
  failed=$((failed + pend))
fi
echo "$ok passed, $failed failed"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ] && exit 0
exit 1
