#!/bin/bash
# A signal during g:run stops the run at the next node boundary: no output file, exit 130
# (tests/lua/interrupt.lua). Under a stock lua5.4 the run stops the same way, then the signal's
# default action ends the interpreter (exit 143).
. "$(dirname "$0")/lib.bash"
export SDFLOW_CACHE=$T/default-cache.db # never the user's cache
"$BIN" lua "$SRC/tests/lua/interrupt.lua" "$SRC/examples/input" "$T/out" >"$T/stdout" 2>"$T/stderr"
got=$?
[ "$got" = 130 ] || { echo "FAIL: exit $got, expected 130"; cat "$T/stderr"; fails=$((fails + 1)); }
grep -q "interrupted" "$T/stderr" || { echo "FAIL: no 'interrupted' message"; fails=$((fails + 1)); }
grep -q "after run" "$T/stdout" && { echo "FAIL: the script went on after the signal"; fails=$((fails + 1)); }
[ -z "$(find "$T" -name '*.png')" ] || { echo "FAIL: a PNG was written"; fails=$((fails + 1)); }

PRELOAD=$(ldd "$BUILD/sdflow.so" | awk '/lib(asan|ubsan)\.so/ { printf "%s ", $3 }')
LD_PRELOAD="$PRELOAD" LUA_CPATH="$BUILD/?.so" lua5.4 "$SRC/tests/lua/interrupt.lua" "$SRC/examples/input" "$T/out2" \
    >"$T/stdout" 2>"$T/stderr"
got=$?
[ "$got" = 143 ] || { echo "FAIL: lua5.4 exit $got, expected 143"; cat "$T/stderr"; fails=$((fails + 1)); }
grep -q "after run" "$T/stdout" && { echo "FAIL: lua5.4 went on after the signal"; fails=$((fails + 1)); }
[ -z "$(find "$T" -name '*.png')" ] || { echo "FAIL: a PNG was written under lua5.4"; fails=$((fails + 1)); }

finish lua_interrupt
