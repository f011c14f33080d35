#!/bin/bash
# ComfyUI interoperability on the command line: UI-format import, the hint that run and
# validate give for .json and .png files, --set NODE.INPUT=VALUE, --set seed=random, seeds up to
# 2^64 - 1, and control_after_generate across --repeat.
. "$(dirname "$0")/lib.bash"
cd "$T" || exit 1

run 0 import comfy "$SRC/tests/data/comfy/ui_subgraph.json" -o ui.xml
cmp -s ui.xml "$SRC/tests/data/comfy/ui_subgraph.xml" || fail "UI import differs from ui_subgraph.xml"

for f in wf.json image.png; do
    run 3 run "$f"
    [ "$(wc -l <"$T/err")" = 1 ] || fail "run $f: not one line: $(cat "$T/err")"
    grep -q "sdflow import comfy $f -o OUT.xml" "$T/err" || fail "run $f: no import hint: $(cat "$T/err")"
    run 3 validate "$f"
    grep -q "sdflow import comfy $f" "$T/err" || fail "validate $f: no import hint"
done
grep -q "sdflow replay image.png --extract OUT.xml" "$T/err" || fail "png: no replay hint"

# Any input of any node, bound to a parameter or not; the parameter binding is replaced.
run 0 save ui.xml -o set.xml --set 30:1.steps=5 --set 5.batch_size=2 --set seed=9
grep -q '<input name="steps">5</input>' set.xml || fail "--set 30:1.steps"
grep -q '<input name="batch_size">2</input>' set.xml || fail "--set 5.batch_size"
grep -q '<param name="seed" type="INT" default="9">' set.xml || fail "--set seed"
run 3 save ui.xml -o x.xml --set 30:1.stepz=5
grep -q "node '30:1' has no input 'stepz'\|stepz" "$T/err" || fail "unknown input: $(cat "$T/err")"

# --set seed=random: a seed in 0 ... 2^64 - 1, told on stderr and kept in the file.
run 0 save ui.xml -o r1.xml --set seed=random
s1=$(sed -n 's/.*<param name="seed" type="INT" default="\([0-9]*\)".*/\1/p' r1.xml)
grep -q "^sdflow: seed = $s1\$" "$T/err" || fail "seed=random not told: $(cat "$T/err")"
run 0 save ui.xml -o r2.xml --set seed=random
s2=$(sed -n 's/.*<param name="seed" type="INT" default="\([0-9]*\)".*/\1/p' r2.xml)
[ -n "$s1" ] && [ "$s1" != "$s2" ] || fail "seed=random: '$s1' then '$s2'"

# Seeds take 0 ... 2^64 - 1; other INT inputs stay signed 64-bit.
run 0 save ui.xml -o big.xml --set seed=18446744073709551615
run 3 save ui.xml -o big.xml --set seed=18446744073709551616
run 3 save ui.xml -o big.xml --set 30:1.seed=-1

# control_after_generate across --repeat: the value used by each run.
cat >count.xml <<'XML'
<workflow version="1">
  <node id="up" type="PrimitiveInt"><input name="value">5</input><input name="control_after_generate">increment</input></node>
  <node id="down" type="PrimitiveInt"><input name="value">5</input><input name="control_after_generate">decrement</input></node>
  <node id="same" type="PrimitiveInt"><input name="value">5</input></node>
  <node id="rnd" type="PrimitiveInt"><input name="value">5</input><input name="control_after_generate">randomize</input></node>
</workflow>
XML
run 0 run count.xml --no-cache --quiet --repeat 3 --output up --output down --output same --output rnd
[ "$(grep -c '^up.INT = ' "$T/out")" = 3 ] || fail "--repeat 3: $(cat "$T/out")"
[ "$(grep '^up.INT' "$T/out" | tr -d '\n')" = "up.INT = 5up.INT = 6up.INT = 7" ] || fail "increment: $(cat "$T/out")"
[ "$(grep '^down.INT' "$T/out" | tr -d '\n')" = "down.INT = 5down.INT = 4down.INT = 3" ] || fail "decrement"
[ "$(grep '^same.INT' "$T/out" | tr -d '\n')" = "same.INT = 5same.INT = 5same.INT = 5" ] || fail "fixed"
[ "$(grep '^rnd.INT' "$T/out" | sort -u | wc -l)" = 3 ] || fail "randomize: $(grep rnd "$T/out")"
run 2 run count.xml --repeat 0
grep -q -- "--repeat needs a count from 1 to 1000000, got '0'" "$T/err" || fail "--repeat 0 message"

# export comfy: API format (ids kept) and --ui; an sdflow-only node type is refused by name.
run 0 export comfy ui.xml -o api.json
grep -q '"class_type": "KSampler"' api.json || fail "export: no KSampler"
run 0 import comfy api.json -o back.xml
run 0 export comfy ui.xml --ui
grep -q '"last_link_id"' "$T/out" || fail "export --ui: not the UI format"
cat >grid.xml <<'XML'
<workflow version="1">
  <node id="i" type="EmptyImage"/>
  <node id="g" type="SdflowImageGrid"><input name="images" from="i" output="IMAGE"/></node>
</workflow>
XML
run 3 export comfy grid.xml -o grid.json
[ "$(cat "$T/err")" = "sdflow: error: node 'g': ComfyUI has no node type 'SdflowImageGrid'" ] ||
    fail "export of an sdflow node: $(cat "$T/err")"
[ -e grid.json ] && fail "grid.json written after a failure"
run 2 export xml ui.xml

# An imported UI workflow runs; --repeat 2 with the sampler's control_after_generate
# "increment" renders seeds 42 and 43, and each PNG records the seed it used.
mkdir -p models/checkpoints
"$MK" --preset tiny models/checkpoints/tiny.safetensors >/dev/null || fail "mkckpt"
run 0 run ui.xml --models-dir models --output-dir o --no-cache --quiet --repeat 2 \
    --set checkpoint=tiny.safetensors --set width=64 --set height=64 --set steps=2
[ "$(wc -l <"$T/out")" = 2 ] || fail "--repeat 2 wrote: $(cat "$T/out")"
n=42
while read -r png; do
    "$BIN" replay "$png" --extract - >wf.xml 2>"$T/err" || fail "extract $png"
    grep -q "<param name=\"seed\" type=\"INT\" default=\"$n\">" wf.xml || fail "$png: seed $n not recorded"
    n=$((n + 1))
done <"$T/out"

# The PNGs carry ComfyUI's "prompt" (ids kept) and "workflow" chunks: importing one gives the
# workflow back. A graph with sdflow's own node types carries neither.
for k in prompt workflow parameters; do
    grep -qa "tEXt$k" "$(head -n 1 "$T/out")" || fail "no uncompressed tEXt '$k' chunk"
done
# A1111's "Model hash" is the AutoV2 hash: the first 10 hex digits of the file's SHA-256.
autov2=$(sha256sum models/checkpoints/tiny.safetensors | cut -c1-10)
grep -qa "Model hash: $autov2, Model: tiny," "$(head -n 1 "$T/out")" || fail "parameters lack Model hash $autov2"
run 0 import comfy "$(head -n 1 "$T/out")" -o from_png.xml
grep -q '<node id="30:1" type="KSampler"' from_png.xml || fail "PNG prompt chunk: $(head -c 300 from_png.xml)"
cat >gridrun.xml <<'XML'
<workflow version="1">
  <node id="i" type="EmptyImage"><input name="width">8</input><input name="height">8</input></node>
  <node id="g" type="SdflowImageGrid"><input name="images" from="i" output="IMAGE"/></node>
  <node id="s" type="SaveImage"><input name="images" from="g" output="IMAGE"/></node>
</workflow>
XML
run 0 run gridrun.xml --output-dir o --no-cache --quiet
run 3 import comfy "$(cat "$T/out")"
grep -q 'the PNG holds no ComfyUI workflow' "$T/err" || fail "sdflow-only graph: $(cat "$T/err")"

finish comfy_ui.sh
