#!/bin/bash
# The Lua examples stay runnable: build_and_run.lua writes a PNG and hits the cache on its
# second run, sweep.lua computes nothing on its second run, load_modify_save.lua rewrites a
# workflow.
. "$(dirname "$0")/lib.bash"
cd "$T" || exit 1
export SDFLOW_CACHE=$T/cache.db

run 0 lua "$SRC/examples/build_and_run.lua" "$T/output"
check "build_and_run image size" grep -q "^image: 256x192, batch 1$" out
check "build_and_run latent" grep -q "^latent: 2x4x48x80$" out
check "build_and_run wrote" grep -q "^wrote $T/output/example/shapes_00001_.png$" out
check "build_and_run PNG" test -s "$T/output/example/shapes_00001_.png"
check "build_and_run progress" grep -q "(SaveImage): " err
run 0 lua "$SRC/examples/build_and_run.lua" "$T/output"
check "build_and_run second run cached" grep -q "^nodes run: 1, from the cache: 2$" out

run 0 lua "$SRC/examples/sweep.lua" "$T/sweep.db"
check "sweep first pass" grep -q "^seed 1 cfg 5.0 -> seed 1, cfg 5.0; ran: latent, seed, cfg; cached: 0$" out
check "sweep reuses within a pass" grep -q "^seed 2 cfg 7.5 -> seed 2, cfg 7.5; ran: nothing; cached: 3$" out
run 0 lua "$SRC/examples/sweep.lua" "$T/sweep.db"
check "sweep second pass from the cache" test "$(grep -c "ran: nothing; cached: 3$" out)" = 6

printf '%s\n' 'local sdflow = require "sdflow"' 'local g = sdflow.graph()' \
    'g:meta("title", "latent")' 'local l = g:add("EmptyLatentImage", nil, "lat")' \
    'g:param("width", "INT", 512, "latent width")' 'g:bind("width", l, "width")' \
    'assert(g:save(arg[1]))' >make.lua
run 0 lua make.lua in.xml
run 0 lua "$SRC/examples/load_modify_save.lua" in.xml out.xml 640
check "load_modify_save lists" grep -q "^  node lat      EmptyLatentImage$" out
check "load_modify_save wrote" grep -q "^wrote out.xml$" out
check "new title" grep -q "<title>latent (width 640)</title>" out.xml
check "new default" grep -q 'name="width" type="INT" default="640"' out.xml
check "binding kept" grep -q '<input name="width" param="width"/>' out.xml
printf '%s\n' 'local g = require("sdflow").graph()' 'g:add("EmptyLatentImage", nil, "lat")' \
    'assert(g:save(arg[1]))' >make2.lua
run 0 lua make2.lua in2.xml
run 0 lua "$SRC/examples/load_modify_save.lua" in2.xml out2.xml 640
check "node input set" grep -q '<input name="width">640</input>' out2.xml
run 3 lua "$SRC/examples/load_modify_save.lua" missing.xml out3.xml
check "load failure reported" grep -q "missing.xml" err
check "nothing written on failure" test ! -e out3.xml
run 2 lua "$SRC/examples/load_modify_save.lua"

finish lua_examples
