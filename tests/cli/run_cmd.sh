#!/bin/bash
# sdflow run: outputs and summary, cache reuse and partial re-execution, --output, --set,
# --help-params, --quiet, --json-progress, --no-cache, and failures with their exit codes.
. "$(dirname "$0")/lib.bash"
mkdir -p "$T/in"
cp "$SRC/examples/input/shapes.png" "$T/in/"
cat >"$T/wf.xml" <<'XML'
<?xml version="1.0" encoding="UTF-8"?>
<workflow version="1">
  <param name="prefix" type="STRING" default="copy">output file name prefix</param>
  <param name="w" type="INT" default="64">latent width in pixels</param>
  <node id="load" type="LoadImage"><input name="image">shapes.png</input></node>
  <node id="save" type="SaveImage">
    <input name="images" from="load" output="IMAGE"/>
    <input name="filename_prefix" param="prefix"/>
  </node>
  <node id="w" type="PrimitiveInt"><input name="value" param="w"/></node>
  <node id="h" type="PrimitiveInt"><input name="value">32</input></node>
  <node id="lat" type="EmptyLatentImage">
    <input name="width" from="w" output="INT"/>
    <input name="height" from="h" output="INT"/>
  </node>
</workflow>
XML
C=(--cache "$T/c.db" --input-dir "$T/in" --output-dir "$T/o")

# First run: the output node and what it needs run; the file is printed on stdout.
run 0 run "$T/wf.xml" "${C[@]}"
check "file on stdout" grep -qx "$T/o/copy_00001_.png" "$T/out"
check "file written" test -s "$T/o/copy_00001_.png"
check "summary" grep -q "sdflow: done: 2 ran, 0 from cache, 3 skipped" "$T/err"
check "summary lists the file" grep -q "wrote $T/o/copy_00001_.png" "$T/err"
check "plain progress lines" grep -q "^\[1/2\] load (LoadImage): running$" "$T/err"

# Unchanged: the image comes from the cache; SaveImage always runs.
run 0 run "$T/wf.xml" "${C[@]}"
check "rerun uses the cache" grep -q "sdflow: done: 1 ran, 1 from cache, 3 skipped" "$T/err"
check "cached line" grep -q "load (LoadImage): cached" "$T/err"

# --output: only what the node needs; values printed.
run 0 run "$T/wf.xml" "${C[@]}" --output lat
check "latent shape" grep -qx "lat.LATENT = LATENT \[1, 4, 4, 8\]" "$T/out"
check "three ran" grep -q "done: 3 ran, 0 from cache" "$T/err"
# Change one input: exactly the nodes downstream of it re-run (h comes from the cache).
run 0 run "$T/wf.xml" "${C[@]}" --output lat --set w=128
check "new width" grep -qx "lat.LATENT = LATENT \[1, 4, 4, 16\]" "$T/out"
check "partial: w and lat ran" grep -q "done: 2 ran, 1 from cache" "$T/err"
check "partial: h cached" grep -q "h (PrimitiveInt): cached" "$T/err"
run 0 run "$T/wf.xml" "${C[@]}" --output lat --output w --set w=128
check "fully cached" grep -q "done: 0 ran, 2 from cache" "$T/err"
check "two outputs" grep -qx "w.INT = 128" "$T/out"

# --no-cache runs everything and stores nothing new.
run 0 run "$T/wf.xml" --no-cache --input-dir "$T/in" --output-dir "$T/o" --output lat
check "no-cache runs" grep -q "done: 3 ran, 0 from cache" "$T/err"
# ... and opens no database, not even for the file-hash memo of LoadImage's input.
XDG_CACHE_HOME=$T/xdg SDFLOW_CACHE= run 0 run "$T/wf.xml" --no-cache --input-dir "$T/in" --output-dir "$T/o2"
check "no-cache ran the image nodes" grep -q "done: 2 ran, 0 from cache" "$T/err"
check "no-cache created no database" test ! -e "$T/xdg"
XDG_CACHE_HOME=$T/xdg SDFLOW_CACHE= run 0 run "$T/wf.xml" --input-dir "$T/in" --output-dir "$T/o2"
check "default cache location" test -f "$T/xdg/sdflow/cache.db"

# --quiet: nothing on stderr.
run 0 run "$T/wf.xml" "${C[@]}" --output lat --quiet
check "quiet" test ! -s "$T/err"

# --json-progress: JSON lines ending with a summary.
run 0 run "$T/wf.xml" "${C[@]}" --json-progress
check "json lines parse" jq -e . "$T/err" >/dev/null
check "json summary" bash -c "tail -n 1 '$T/err' | jq -e '.event == \"summary\" and .status == \"ok\" and (.files | length) == 1' >/dev/null"
check "json cached event" grep -q '"event":"cached","nodes":2' "$T/err"

# --help-params
run 0 run "$T/wf.xml" --help-params --set w=100
check "params listed" grep -q "^  w       INT      default: 64  (set: 100)$" "$T/out"
check "param doc" grep -q "latent width in pixels" "$T/out"
# White space around a number is dropped on either side (a trailing space was refused while a
# leading one was accepted); text keeps its own.
run 0 run "$T/wf.xml" --help-params --set 'w=100 ' --set 'prefix= a '
check "trailing space dropped" grep -q "^  w       INT      default: 64  (set: 100)$" "$T/out"
check "text keeps its spaces" grep -q "^  prefix  STRING   default: copy  (set:  a )$" "$T/out"
run 0 run "$T/wf.xml" --help-params --set "w=$(printf '\t96 \n')"
check "leading space dropped" grep -q "^  w       INT      default: 64  (set: 96)$" "$T/out"
run 0 run "$T/wf.xml" "${C[@]}" --output lat --set 'w= 128 '
check "spaced number used" grep -qx "lat.LATENT = LATENT \[1, 4, 4, 16\]" "$T/out"
run 3 run "$T/wf.xml" "${C[@]}" --output lat --set 'w= '
check "only spaces is no number" grep -q "parameter 'w': ' ' is not an integer" "$T/err"

# Failures: exit code and message, nothing written.
before=$(ls "$T/o" | wc -l)
run 3 run "$T/wf.xml" "${C[@]}" --set nope=1
check "unknown parameter" grep -q "no parameter 'nope'" "$T/err"
run 3 run "$T/wf.xml" "${C[@]}" --set w=abc
check "bad parameter value" grep -q "'abc' is not an integer" "$T/err"
run 3 run "$T/wf.xml" "${C[@]}" --output lat --set w=8
check "linked value out of range names the node" \
    grep -q "sdflow: error: node 'lat' (EmptyLatentImage): input 'width': 8 is out of range \[16, 16384\]" "$T/err"
run 3 run "$T/wf.xml" "${C[@]}" --output lat --set w=100
check "linked size not a multiple of 8 names the node" \
    grep -q "sdflow: error: node 'lat' (EmptyLatentImage): width 100 is not a multiple of 8" "$T/err"
run 3 run "$T/wf.xml" "${C[@]}" --output nope
check "unknown output node" grep -q "no node 'nope' in the workflow" "$T/err"
run 3 run "$T/wf.xml" "${C[@]}" --input-dir "$T/missing"
check "missing input image" grep -q "shapes.png" "$T/err"
run 2 run "$T/wf.xml" --cache "$T/c.db" --no-cache
check "cache conflict" grep -q -- "--cache and --no-cache exclude each other" "$T/err"
run 2 run
check "missing file argument" grep -q "missing the workflow file" "$T/err"
run 2 run "$T/wf.xml" --bogus
check "unknown option" grep -q "unknown option '--bogus'" "$T/err"
# An invalid workflow: every problem with file:line, nothing runs, no summary, no database.
cat >"$T/bad.xml" <<'XML'
<?xml version="1.0"?>
<workflow version="1">
  <node id="a" type="PrimitiveInt"><input name="value">x</input></node>
  <node id="s" type="SaveImage"><input name="images" from="zz" output="IMAGE"/></node>
</workflow>
XML
run 3 run "$T/bad.xml" --cache "$T/bad.db" --output-dir "$T/o"
check "diagnostic 1" grep -q "bad.xml:3: node 'a' input 'value': 'x' is not an integer" "$T/err"
check "diagnostic 2" grep -q "bad.xml:4: node 's' input 'images': link from unknown node 'zz'" "$T/err"
check "no summary for an invalid workflow" bash -c "! grep -q ' ran, ' '$T/err'"
check "no database for an invalid workflow" test ! -e "$T/bad.db"
check "nothing written by failures" test "$(ls "$T/o" | wc -l)" = "$before"

# A corrupt cache never fails a run.
head -c 10000 /dev/urandom >"$T/c.db"
rm -f "$T/c.db-wal" "$T/c.db-shm"
run 0 run "$T/wf.xml" "${C[@]}" --output lat
check "corrupt cache warning" grep -q "was corrupt: moved to" "$T/err"

finish run_cmd
