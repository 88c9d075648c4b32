#!/bin/bash
# The test command: installs missing Debian 12 packages, builds ./build/mocdc and
# runs every spec (busted inside the mocdc binary, real mariadbd servers started by
# spec/helpers/mariadb.lua -- never the system service). Works from any cwd.
#   ./scripts/test.sh                      # the whole suite
#   ./scripts/test.sh spec/regex_spec.lua  # some files (any busted arguments)
# Ends with "N passed, N failed"; exits non-zero when anything failed. A pending spec
# counts as failed: nothing in this suite may be skipped.
set -u -o pipefail
# the specs must run the Lua compiled into the binary, not a development copy on disk
unset MOCDC_LUA_PATH
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
log=$(mktemp /tmp/mocdc-test-log-XXXXXX)
trap 'rm -f "$log"' EXIT
./build/mocdc busted --output=utfTerminal "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

# busted's summary: "12 successes / 1 failure / 0 errors / 2 pending : 3.1 seconds"
summary=$(sed 's/\x1b\[[0-9;]*m//g' "$log" |
  grep -E '^[0-9]+ success(es)? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' | tail -n 1)
if [ -n "$summary" ]; then
  read -r ok _ _ fail _ _ err _ _ pend _ <<<"$summary"
  failed=$((fail + err))
  [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ] && failed=1  # busted itself failed after the summary
else
  ok=0 failed=1 pend=0
  echo "test.sh: busted ended without a summary (exit $rc)"
fi
if [ "$pend" -gt 0 ]; then
  echo "test.sh: $pend pending spec(s) counted as failed (nothing may be skipped)"
  failed=$((failed + pend))
fi
echo "$ok passed, $failed failed"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ] && exit 0
exit 1
