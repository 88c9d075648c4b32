
# Consider dependencies only in project.
set(CMAKE_DEPENDS_IN_PROJECT_ONLY OFF)

# The set of languages for which implicit dependencies are needed:
set(CMAKE_DEPENDS_LANGUAGES
  )

# The set of dependency files which are needed:
set(CMAKE_DEPENDS_DEPENDENCY_FILES
  "/work/wt-tls/build-asan/builtin_lua.c" "CMakeFiles/mocdc.dir/builtin_lua.c.o" "gcc" "CMakeFiles/mocdc.dir/builtin_lua.c.o.d"
  "/work/wt-tls/host/batch.c" "CMakeFiles/mocdc.dir/host/batch.c.o" "gcc" "CMakeFiles/mocdc.dir/host/batch.c.o.d"
  "/work/wt-tls/host/binlog.c" "CMakeFiles/mocdc.dir/host/binlog.c.o" "gcc" "CMakeFiles/mocdc.dir/host/binlog.c.o.d"
  "/work/wt-tls/host/checkpoint.c" "CMakeFiles/mocdc.dir/host/checkpoint.c.o" "gcc" "CMakeFiles/mocdc.dir/host/checkpoint.c.o.d"
  "/work/wt-tls/host/conn.c" "CMakeFiles/mocdc.dir/host/conn.c.o" "gcc" "CMakeFiles/mocdc.dir/host/conn.c.o.d"
  "/work/wt-tls/host/connopts.c" "CMakeFiles/mocdc.dir/host/connopts.c.o" "gcc" "CMakeFiles/mocdc.dir/host/connopts.c.o.d"
  "/work/wt-tls/host/diff.c" "CMakeFiles/mocdc.dir/host/diff.c.o" "gcc" "CMakeFiles/mocdc.dir/host/diff.c.o.d"
  "/work/wt-tls/host/main.c" "CMakeFiles/mocdc.dir/host/main.c.o" "gcc" "CMakeFiles/mocdc.dir/host/main.c.o.d"
  "/work/wt-tls/host/regex.c" "CMakeFiles/mocdc.dir/host/regex.c.o" "gcc" "CMakeFiles/mocdc.dir/host/regex.c.o.d"
  "/work/wt-tls/host/sqlbuild.c" "CMakeFiles/mocdc.dir/host/sqlbuild.c.o" "gcc" "CMakeFiles/mocdc.dir/host/sqlbuild.c.o.d"
  "/work/wt-tls/host/util.c" "CMakeFiles/mocdc.dir/host/util.c.o" "gcc" "CMakeFiles/mocdc.dir/host/util.c.o.d"
  )

# Targets to which this target links.
set(CMAKE_TARGET_LINKED_INFO_FILES
  )

# Fortran module output directory.
set(CMAKE_Fortran_TARGET_MODULE_DIR "")
