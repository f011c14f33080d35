#!/bin/bash
# sdflow lua's options: --models-dir, --input-dir, --output-dir, --cache, --no-cache and --device
# set every context the script makes, as `sdflow run` takes them; --lua-memory and
# --lua-instructions end the script with exit 4 and a one-line message, and no pcall, xpcall or
# coroutine lets it go on.
. "$(dirname "$0")/lib.bash"
export SDFLOW_CACHE=$T/default-cache.db # never the user's cache
cd "$T" || exit 1

# ---- Directories, cache and device. ----
mkdir -p models/checkpoints elsewhere
"$MK" models/checkpoints/tiny.safetensors >/dev/null || fail "sdflow_mkckpt"
cat >dirs.lua <<'LUA'
local sdflow = require "sdflow"
local function show(what, s)
  print(what, s.input_dir, s.output_dir, tostring(s.cache), tostring(s.device))
end
show("default", sdflow.settings())
show("context", sdflow.context():settings())
show("override", sdflow.context{input_dir = "own", cache = "own.db"}:settings())
local g <close> = sdflow.graph()
local ck = g:add("CheckpointLoaderSimple", {ckpt_name = "tiny.safetensors"})
local r, err = g:run{outputs = {ck}}
print("checkpoint", r and r:get(ck, "MODEL").type or err)
LUA
export SDFLOW_MODELS=$T/elsewhere
run 0 lua --models-dir "$T/nothing" --models-dir="$T/models" --input-dir in --output-dir=out \
    --cache c.db --device 0 dirs.lua
check "default context" grep -qx "$(printf 'default\tin\tout\tc.db\t0')" out
check "new context" grep -qx "$(printf 'context\tin\tout\tc.db\t0')" out
check "own options win" grep -qx "$(printf 'override\town\tout\town.db\t0')" out
check "--models-dir found the checkpoint" grep -qx "$(printf 'checkpoint\tMODEL')" out
check "--cache used" test -e c.db
run 0 lua --no-cache dirs.lua
check "--no-cache" grep -qx "$(printf 'default\tinput\toutput\tfalse\tnil')" out
check "SDFLOW_MODELS without --models-dir" grep -q "^checkpoint	.*problem" out
unset SDFLOW_MODELS
cat >abs.lua <<LUA
local sdflow = require "sdflow"
local g <close> = sdflow.graph()
local ck = g:add("CheckpointLoaderSimple", {ckpt_name = "$T/models/checkpoints/tiny.safetensors"})
local r, err = g:run{outputs = {ck}}
print("absolute", r and r:get(ck, "MODEL").type or err)
LUA
run 0 lua --no-cache abs.lua
check "an absolute path needs the option" grep -q "^absolute	.*problem" out
run 0 lua --no-cache --allow-absolute-paths abs.lua
check "--allow-absolute-paths" grep -qx "$(printf 'absolute\tMODEL')" out
run 2 lua --cache c.db --no-cache dirs.lua
check "--cache with --no-cache" grep -q "exclude each other" err
run 2 lua --set seed=1 dirs.lua
check "--set refused" grep -q "unknown option '--set'" err

# ---- Limits. ----
# limited EXIT LINE OPTION... -- SCRIPT: sdflow lua OPTION... SCRIPT exits EXIT with the single
# stderr line LINE (a grep -x pattern).
limited() {
    local want=$1 line=$2
    shift 2
    run "$want" lua "$@"
    if [ "$(wc -l <err)" != 1 ] || ! grep -qx "$line" err; then
        fail "sdflow lua $*: stderr is not the line '$line'"; cat err
    fi
}
printf 'local t = {}\nwhile true do t[#t + 1] = ("x"):rep(1000) .. #t end\n' >grow.lua
limited 4 "sdflow: error: grow.lua: Lua memory limit of 10485760 bytes exceeded (--lua-memory)" \
    --lua-memory 10M grow.lua
cat >grow_pcall.lua <<'LUA'
local t = {}
while true do
  local ok = pcall(function() t[#t + 1] = ("x"):rep(100000) .. #t end)
  if not ok then print("caught") t = {} collectgarbage() end
end
LUA
limited 4 "sdflow: error: grow_pcall.lua: Lua memory limit of 10485760 bytes exceeded (--lua-memory)" \
    --lua-memory 10M grow_pcall.lua
check "pcall caught the memory limit" test ! -s out
printf 'coroutine.wrap(function()\n  local t = {}\n  while true do\n    if not pcall(function() t[#t + 1] = ("x"):rep(100000) .. #t end) then t = {} end\n  end\nend)()\n' >grow_co.lua
limited 4 "sdflow: error: grow_co.lua: Lua memory limit of 1048576 bytes exceeded (--lua-memory)" \
    --lua-memory 1M grow_co.lua
limited 4 "sdflow: error: grow.lua: Lua memory limit of 1000 bytes exceeded (--lua-memory)" \
    --lua-memory 1000 grow.lua

printf 'while true do pcall(function() end) end\n' >spin.lua
limited 4 "sdflow: error: spin.lua:1: instruction limit of 100000 exceeded (--lua-instructions)" \
    --lua-instructions 100000 spin.lua
printf 'coroutine.wrap(function()\n  while true do xpcall(function() while true do end end, function(e) return e end) end\nend)()\n' >spin_co.lua
limited 4 "sdflow: error: spin_co.lua:[0-9]*: instruction limit of 100000 exceeded (--lua-instructions)" \
    --lua-instructions=100000 spin_co.lua
# Inside a run's progress function, which the run calls under its own pcall.
cat >spin_run.lua <<'LUA'
local g <close> = require("sdflow").graph()
local n = g:add("PrimitiveInt", {value = 1})
print(pcall(g.run, g, {outputs = {n}, cache = false, progress = function() while true do end end}))
print("went on")
LUA
limited 4 "sdflow: error: spin_run.lua:[0-9]*: instruction limit of 100000 exceeded (--lua-instructions)" \
    --lua-instructions 100000 spin_run.lua
check "the script went on after the limit" test ! -s out

# Within the limits (0: none) a script runs to its end.
printf 'local t = {}\nfor i = 1, 1000 do t[i] = ("x"):rep(100) end\nprint(#t)\n' >small.lua
run 0 lua --lua-memory 64M --lua-instructions 1000000 small.lua
check "within the limits" grep -qx 1000 out
run 0 lua --lua-memory 0 --lua-instructions 0 small.lua
check "0 is no limit" grep -qx 1000 out
run 4 lua --lua-instructions 1000 small.lua
run 2 lua --lua-memory lots small.lua
check "bad --lua-memory" grep -q "'lots' is not a size" err
run 2 lua --lua-instructions -5 small.lua
check "bad --lua-instructions" grep -q "'-5' is not a count" err
run 2 lua --lua-memory
check "--lua-memory without a value" grep -q "needs a value" err

finish lua_options
