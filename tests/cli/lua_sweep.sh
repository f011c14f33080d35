#!/bin/bash
# A Lua parameter sweep reuses the cache (tests/lua/sweep.lua): the second pass reports every
# node as cached through the result stats.
. "$(dirname "$0")/lib.bash"
export SDFLOW_CACHE=$T/default-cache.db # never the user's cache
"$BIN" lua "$SRC/tests/lua/sweep.lua" "$T/cache.db" >"$T/out" 2>&1
got=$?
if [ "$got" != 0 ] || ! grep -q "^sweep: ok$" "$T/out"; then
    echo "FAIL: sweep.lua exited $got"; cat "$T/out"; exit 1
fi
echo "lua_sweep: ok"
