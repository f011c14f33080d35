#!/bin/bash
# A signal during g:run stops the run at the next node boundary: no output file, exit 130
# (tests/lua/interrupt.lua), also when the run is called in a loop of pcalls. Under a stock
# lua5.4 the run stops the same way, then the signal's default action ends the interpreter (exit
# 143). A pcall loop outside any run does not catch SIGINT or SIGTERM either: the script ends at
# once with exit 130 and the one-line message.
. "$(dirname "$0")/lib.bash"
export SDFLOW_CACHE=$T/default-cache.db # never the user's cache
"$BIN" lua "$SRC/tests/lua/interrupt.lua" "$SRC/examples/input" "$T/out" >"$T/stdout" 2>"$T/stderr"
got=$?
[ "$got" = 130 ] || { echo "FAIL: exit $got, expected 130"; cat "$T/stderr"; fails=$((fails + 1)); }
grep -q "interrupted" "$T/stderr" || { echo "FAIL: no 'interrupted' message"; fails=$((fails + 1)); }
grep -q "after run" "$T/stdout" && { echo "FAIL: the script went on after the signal"; fails=$((fails + 1)); }
[ -z "$(find "$T" -name '*.png')" ] || { echo "FAIL: a PNG was written"; fails=$((fails + 1)); }

"$BIN" lua "$SRC/tests/lua/interrupt.lua" "$SRC/examples/input" "$T/out" pcall >"$T/stdout" 2>"$T/stderr"
got=$?
[ "$got" = 130 ] || { echo "FAIL: pcall loop: exit $got, expected 130"; cat "$T/stderr"; fails=$((fails + 1)); }
grep -q "^pcall" "$T/stdout" && { echo "FAIL: a pcall caught the interrupt"; fails=$((fails + 1)); }
[ -z "$(find "$T" -name '*.png')" ] || { echo "FAIL: a PNG was written in the pcall loop"; fails=$((fails + 1)); }

PRELOAD=$(ldd "$BUILD/sdflow.so" | awk '/lib(asan|ubsan)\.so/ { printf "%s ", $3 }')
LD_PRELOAD="$PRELOAD" LUA_CPATH="$BUILD/?.so" lua5.4 "$SRC/tests/lua/interrupt.lua" "$SRC/examples/input" "$T/out2" \
    >"$T/stdout" 2>"$T/stderr"
got=$?
[ "$got" = 143 ] || { echo "FAIL: lua5.4 exit $got, expected 143"; cat "$T/stderr"; fails=$((fails + 1)); }
grep -q "after run" "$T/stdout" && { echo "FAIL: lua5.4 went on after the signal"; fails=$((fails + 1)); }
[ -z "$(find "$T" -name '*.png')" ] || { echo "FAIL: a PNG was written under lua5.4"; fails=$((fails + 1)); }

# interrupt SIGNAL NAME BODY: runs the script NAME.lua (BODY, after a line that writes its pid to
# "started") under sdflow lua, sends SIGNAL once it has started; it must end within 10 s with exit
# 130 and the only line on stderr "NAME.lua:LINE: interrupted".
interrupt() {
    local sig=$1 name=$2
    printf 'local f = io.open("started", "w") f:write(io.open("/proc/self/stat"):read("l"):match("^%%d+")) f:close()\n%s\n' \
        "$3" >"$T/$name.lua"
    rm -f "$T/started"
    (cd "$T" && timeout -s KILL 10 "$BIN" lua "$name.lua" >"$T/stdout" 2>"$T/stderr") &
    local job=$!
    for _ in $(seq 200); do [ -s "$T/started" ] && break; sleep 0.05; done
    sleep 0.2 # well inside the loop
    kill -"$sig" "$(cat "$T/started")"
    wait "$job"
    local got=$?
    if [ "$got" != 130 ] || [ "$(wc -l <"$T/stderr")" != 1 ] ||
        ! grep -qx "sdflow: error: $name.lua:[0-9]*: interrupted" "$T/stderr"; then
        echo "FAIL: SIG$sig to $name.lua: exit $got (137: still running after 10 s), expected 130"
        cat "$T/stderr"; fails=$((fails + 1))
    fi
}
for sig in INT TERM; do
    interrupt $sig pcall_loop 'while true do pcall(function() local t = {} for i = 1, 100 do t[i] = i end end) end'
    interrupt $sig pcall_spin 'while true do pcall(function() while true do end end) end'
    interrupt $sig xpcall_spin 'while true do xpcall(function() while true do end end, function(e) return e end) end'
    interrupt $sig coroutine_spin 'coroutine.wrap(function() while true do pcall(function() while true do end end) end end)()'
    interrupt $sig resume_spin 'local co = coroutine.create(function() while true do end end)
while true do coroutine.resume(co) co = coroutine.create(function() while true do end end) end'
done

finish lua_interrupt
