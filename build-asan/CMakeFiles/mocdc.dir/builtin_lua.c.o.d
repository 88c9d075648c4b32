CMakeFiles/mocdc.dir/builtin_lua.c.o: \
 /work/wt-tls/build-asan/builtin_lua.c /usr/include/stdc-predef.h \
 /usr/lib/gcc/x86_64-linux-gnu/12/include/stddef.h \
 /work/wt-tls/host/builtin.h
