#!/bin/bash
# sdflow lua never loads bytecode (Lua 5.4 does not verify it): load, loadfile, dofile and
# require refuse a precompiled chunk and still load text (tests/lua/bytecode.lua); an uncaught
# refusal is the one-line error naming the file. debug.sethook, which would remove the hook that
# stops scripts, raises.
. "$(dirname "$0")/lib.bash"
export SDFLOW_CACHE=$T/default-cache.db # never the user's cache
cd "$T" || exit 1
mkdir scratch
run 0 lua "$SRC/tests/lua/bytecode.lua" "$T/scratch"
check "bytecode.lua: $(cat out)" grep -qx "bytecode: ok" out

# A chunk precompiled by string.dump (what luac5.4 writes), loaded by dofile without pcall.
printf 'local f = assert(io.open("chunk.luac", "wb"))\nf:write(string.dump(load("io.open(\\"ran\\", \\"w\\"):close()")))\nf:close()\ndofile("chunk.luac")\n' >dofile.lua
run 3 lua dofile.lua
check "dofile message" grep -qx "sdflow: error: chunk.luac: attempt to load a binary chunk (mode is 't')" err
check "dofile did not run the chunk" test ! -e ran

printf 'debug.sethook()\n' >sethook.lua
run 3 lua sethook.lua
check "debug.sethook refused" grep -q "^sdflow: error: sethook.lua:1: debug.sethook is not available under sdflow lua" err

finish lua_bytecode
