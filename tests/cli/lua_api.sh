#!/bin/bash
# The Lua module's API tests (tests/lua/api.lua) under `sdflow lua` and under a stock lua5.4
# interpreter loading the built module through LUA_CPATH; handles left to the garbage
# collector leak nothing (tests/lua/gc.lua).
. "$(dirname "$0")/lib.bash"
export SDFLOW_CACHE=$T/default-cache.db # never the user's cache
cp "$SRC/tests/lua/api.lua" "$T/"

mkdir "$T/cli" "$T/stock"
(cd "$T/cli" && "$BIN" lua ../api.lua) >"$T/out" 2>&1
got=$?
if [ "$got" != 0 ] || ! grep -q "^api: ok$" "$T/out"; then
    echo "FAIL: sdflow lua api.lua exited $got"; cat "$T/out"; fails=$((fails + 1))
fi

# A sanitizer build's module needs the sanitizer runtimes loaded first into the plain lua5.4.
PRELOAD=$(ldd "$BUILD/sdflow.so" | awk '/lib(asan|ubsan)\.so/ { printf "%s ", $3 }')
(cd "$T/stock" && LD_PRELOAD="$PRELOAD" LUA_CPATH="$BUILD/?.so" LUA_PATH="" lua5.4 ../api.lua) >"$T/out" 2>&1
got=$?
if [ "$got" != 0 ] || ! grep -q "^api: ok$" "$T/out"; then
    echo "FAIL: lua5.4 api.lua (require from the built module) exited $got"; cat "$T/out"; fails=$((fails + 1))
fi

# Handles left to the garbage collector: LeakSanitizer on in a sanitizer build.
(cd "$T/cli" && ASAN_OPTIONS=detect_leaks=1 "$BIN" lua "$SRC/tests/lua/gc.lua") >"$T/out" 2>&1
got=$?
if [ "$got" != 0 ] || ! grep -q "^gc: ok$" "$T/out"; then
    echo "FAIL: sdflow lua gc.lua exited $got"; cat "$T/out"; fails=$((fails + 1))
fi

finish lua_api
