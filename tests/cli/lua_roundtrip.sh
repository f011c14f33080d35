#!/bin/bash
# XML save/load round trip from Lua (tests/lua/roundtrip.lua).
. "$(dirname "$0")/lib.bash"
export SDFLOW_CACHE=$T/default-cache.db # never the user's cache
mkdir "$T/dir"
"$BIN" lua "$SRC/tests/lua/roundtrip.lua" "$T/dir" >"$T/out" 2>&1
got=$?
if [ "$got" != 0 ] || ! grep -q "^roundtrip: ok$" "$T/out"; then
    echo "FAIL: roundtrip.lua exited $got"; cat "$T/out"; exit 1
fi
echo "lua_roundtrip: ok"
