#!/bin/bash
# Installs the Debian 12 packages mocdc needs to build, test and demo, only
# when missing, then checks that the programs and files it needs are there.
# Sourced by scripts/test.sh, scripts/demo.sh and bench/*.sh.
MOCDC_PACKAGES="build-essential cmake pkg-config luajit libluajit-5.1-dev libmariadb-dev lua-cjson libpcre2-dev lua-busted sqlite3 libsqlite3-dev mariadb-server mariadb-client zsh"
# what the build, the specs and the demo run or load; each must exist after installing
MOCDC_NEEDED_PROGRAMS="cc make cmake pkg-config luajit sqlite3 mariadbd mariadb mariadb-admin mariadb-install-db mariadb-binlog zsh"
# Lua modules the binary loads from the system (LuaJIT's search paths)
MOCDC_NEEDED_LUA="busted.runner busted.init cjson"

# installed means dpkg's status "install ok installed": `dpkg -s` also succeeds for a
# package that was removed but not purged ("deinstall ok config-files")
mocdc_pkg_installed() {
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

mocdc_check_deps() {
  bad=""
  for prog in $MOCDC_NEEDED_PROGRAMS; do
    command -v "$prog" >/dev/null 2>&1 || [ -x "/usr/sbin/$prog" ] || [ -x "/usr/local/sbin/$prog" ] ||
      bad="$bad $prog"
  done
  for m in $MOCDC_NEEDED_LUA; do
    luajit -e "assert(package.searchpath('$m', package.path) or package.searchpath('$m', package.cpath))" \
      >/dev/null 2>&1 || bad="$bad lua:$m"
  done
  [ -z "$bad" ] && return 0
  echo "deps.sh: missing after installing $MOCDC_PACKAGES:$bad" >&2
  return 1
}

mocdc_install_deps() {
  missing=""
  for p in $MOCDC_PACKAGES; do
    mocdc_pkg_installed "$p" || missing="$missing $p"
  done
  if [ -n "$missing" ]; then
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
    # shellcheck disable=SC2086
    $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends $missing >/dev/null
    rc=$?
    [ -n "$created_policy" ] && $SUDO rm -f /usr/sbin/policy-rc.d
    if [ $rc -ne 0 ]; then
      echo "deps.sh: apt-get install of$missing failed (exit $rc)" >&2
      return $rc
    fi
    for p in $missing; do
      mocdc_pkg_installed "$p" ||
        { echo "deps.sh: $p is not installed after apt-get install ($(dpkg-query -W -f='${Status}' "$p" 2>&1))" >&2; return 1; }
    done
  fi
  mocdc_check_deps
}
mocdc_build() {
  cmake -S "$MOCDC_ROOT" -B "$MOCDC_ROOT/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null &&
    make -C "$MOCDC_ROOT/build" -j"$(nproc)" --no-print-directory 2>&1 | grep -Ev '^(\[|make|Consolidate|Scanning)' || true
  [ -x "$MOCDC_ROOT/build/mocdc" ]
}
