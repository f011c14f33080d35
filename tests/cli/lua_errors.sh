#!/bin/bash
# sdflow lua: exit codes and messages of script errors (runtime, syntax, bytecode, unreadable,
# usage, interrupt), arg/... as lua5.4 sets them, and os.exit codes.
. "$(dirname "$0")/lib.bash"
export SDFLOW_CACHE=$T/default-cache.db # never the user's cache
cd "$T" || exit 1

# A runtime error: exit 3, "script:line: message" and a traceback on stderr.
printf 'local x = 1\nlocal t = nil\nprint(t.field)\n' >runtime.lua
run 3 lua runtime.lua
check "runtime message" grep -q "^sdflow: error: runtime.lua:3: attempt to index a nil value (local 't')$" err
check "traceback" grep -q "^stack traceback:" err
printf 'error("boom")\n' >boom.lua
run 3 lua boom.lua
check "error() message" grep -q "^sdflow: error: boom.lua:1: boom$" err
printf 'error(setmetatable({}, {__tostring = function() return "custom" end}))\n' >obj.lua
run 3 lua obj.lua
check "error object with __tostring" grep -q "^sdflow: error: custom$" err
printf 'error({})\n' >table.lua
run 3 lua table.lua
check "error object without __tostring" grep -q "^sdflow: error: (error object is a table value)$" err

# A misuse of the module: exit 3 with the script's line.
printf 'local sdflow = require "sdflow"\nlocal g = sdflow.graph()\n\ng:add("NoSuchNode")\n' >misuse.lua
run 3 lua misuse.lua
check "module misuse line" grep -q "^sdflow: error: misuse.lua:4: unknown node type 'NoSuchNode'$" err

# A syntax error: exit 3, nothing of the script runs.
printf 'io.open("ran", "w"):close()\nlocal x = = 2\n' >syntax.lua
run 3 lua syntax.lua
check "syntax message" grep -q "^sdflow: error: syntax.lua:2: unexpected symbol near '='$" err
check "syntax error runs nothing" test ! -e ran

# Bytecode is refused (text chunks only).
printf 'io.open("ran", "w"):close()\n' >src.lua
lua5.4 -e 'local f = assert(io.open("bytecode.lua", "wb")); f:write(string.dump(assert(loadfile("src.lua")))); f:close()'
run 3 lua bytecode.lua
check "bytecode refused" grep -q "^sdflow: error: bytecode.lua: attempt to load a binary chunk (mode is 't')$" err
check "bytecode did not run" test ! -e ran

# Unreadable script: exit 5; usage errors: exit 2.
run 5 lua missing.lua
check "missing script" grep -q "^sdflow: error: cannot open missing.lua" err
run 2 lua
check "no script" grep -q "no script given" err
run 2 lua --frobnicate x.lua
check "unknown option" grep -q "unknown option '--frobnicate'" err
run 0 lua --help
check "help" grep -q "^usage: sdflow lua" out

# arg and ... as lua5.4 sets them; os.exit codes; stdin; "--".
printf 'print(arg[-2], arg[-1], arg[0], #arg, ...)\n' >args.lua
run 0 lua args.lua a "b c"
check "arg table" grep -qx "$(printf 'sdflow\tlua\targs.lua\t2\ta\tb c')" out
run 0 lua -- args.lua -x
check "-- ends options" grep -qx "$(printf 'sdflow\tlua\targs.lua\t1\t-x')" out
printf 'os.exit(7)\n' >exit7.lua
run 7 lua exit7.lua
printf 'print(require("sdflow").version, ...)\n' | "$BIN" lua - q >out 2>err
check "script from stdin" grep -q "q$" out

# SIGINT stops a running script: exit 130.
printf 'io.open("started", "w"):close()\nwhile true do end\n' >loop.lua
"$BIN" lua loop.lua >out 2>err &
pid=$!
for _ in $(seq 100); do [ -e started ] && break; sleep 0.05; done
kill -INT "$pid"
wait "$pid"
got=$?
check "SIGINT exit 130 (got $got)" test "$got" = 130
check "interrupted message" grep -q "interrupted" err

finish lua_errors
