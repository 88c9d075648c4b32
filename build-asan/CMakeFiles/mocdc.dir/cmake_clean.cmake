file(REMOVE_RECURSE
  "CMakeFiles/mocdc.dir/builtin_lua.c.o"
  "CMakeFiles/mocdc.dir/builtin_lua.c.o.d"
  "CMakeFiles/mocdc.dir/host/batch.c.o"
  "CMakeFiles/mocdc.dir/host/batch.c.o.d"
  "CMakeFiles/mocdc.dir/host/binlog.c.o"
  "CMakeFiles/mocdc.dir/host/binlog.c.o.d"
  "CMakeFiles/mocdc.dir/host/checkpoint.c.o"
  "CMakeFiles/mocdc.dir/host/checkpoint.c.o.d"
  "CMakeFiles/mocdc.dir/host/conn.c.o"
  "CMakeFiles/mocdc.dir/host/conn.c.o.d"
  "CMakeFiles/mocdc.dir/host/connopts.c.o"
  "CMakeFiles/mocdc.dir/host/connopts.c.o.d"
  "CMakeFiles/mocdc.dir/host/diff.c.o"
  "CMakeFiles/mocdc.dir/host/diff.c.o.d"
  "CMakeFiles/mocdc.dir/host/main.c.o"
  "CMakeFiles/mocdc.dir/host/main.c.o.d"
  "CMakeFiles/mocdc.dir/host/regex.c.o"
  "CMakeFiles/mocdc.dir/host/regex.c.o.d"
  "CMakeFiles/mocdc.dir/host/sqlbuild.c.o"
  "CMakeFiles/mocdc.dir/host/sqlbuild.c.o.d"
  "CMakeFiles/mocdc.dir/host/util.c.o"
  "CMakeFiles/mocdc.dir/host/util.c.o.d"
  "builtin_lua.c"
  "mocdc"
  "mocdc.pdb"
)

# Per-language clean rules from dependency scanning.
foreach(lang C)
  include(CMakeFiles/mocdc.dir/cmake_clean_${lang}.cmake OPTIONAL)
endforeach()
