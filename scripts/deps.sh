#!/bin/bash
# Installs the Debian 12 packages mocdc needs to build, test and demo, only
# when missing. Sourced by scripts/test.sh, scripts/demo.sh and bench/*.sh.
MOCDC_PACKAGES="build-essential cmake pkg-config luajit libluajit-5.1-dev libmariadb-dev lua-cjson libpcre2-dev lua-busted sqlite3 libsqlite3-dev mariadb-server mariadb-client"
mocdc_install_deps() {
  missing=""
  for p in $MOCDC_PACKAGES; do
    dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
  done
  [ -z "$missing" ] && return 0
  echo "installing:$missing" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  # never start the distribution's MariaDB service: tests and the demo run their own servers
  export DEBIAN_FRONTEND=noninteractive RUNLEVEL=1
  # ...and keep the package scripts from starting it (policy-rc.d: 101 = action forbidden)
  created_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null && $SUDO chmod +x /usr/sbin/policy-rc.d &&
      created_policy=1
  fi
  $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null
  rc=$?
  [ -n "$created_policy" ] && $SUDO rm -f /usr/sbin/policy-rc.d
  return $rc
}
mocdc_build() {
  cmake -S "$MOCDC_ROOT" -B "$MOCDC_ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null &&
    make -C "$MOCDC_ROOT/build" -j"$(nproc)" --no-print-directory 2>&1 | grep -Ev '^(\[|make|Consolidate|Scanning)' || true
  [ -x "$MOCDC_ROOT/build/mocdc" ]
}
