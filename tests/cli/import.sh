#!/bin/bash
# sdflow import comfy: a ComfyUI API workflow becomes valid workflow XML; an unsupported node is
# an error naming it, and nothing is written.
. "$(dirname "$0")/lib.bash"
cd "$T" || exit 1
cp "$SRC"/tests/data/comfy/*.json .

"$BIN" import comfy primitives_api.json -o prim.xml 2>err || fail "import: $(cat err)"
"$BIN" validate prim.xml >out 2>err || fail "imported file does not validate: $(cat err)"
grep -q '<node id="10" type="PrimitiveInt" version="1">' prim.xml || fail "node ids kept"
grep -q '<input name="value" from="1" output="INT"/>' prim.xml || fail "slot 0 -> output INT"
grep -q '<input name="value">0.1</input>' prim.xml || fail "float text"
"$BIN" import comfy primitives_api.json >stdout.xml 2>err || fail "import to stdout"
cmp -s prim.xml stdout.xml || fail "stdout and -o differ"

"$BIN" import comfy custom_node_api.json -o custom.xml >out 2>err
[ $? = 3 ] || fail "unsupported node exit code"
[ "$(cat err)" = "sdflow: error: custom_node_api.json: unsupported node types: 'ImpactWildcardProcessor' (node '2'), 'ShowText|pysssss' (node '3')" ] ||
    fail "unsupported node message: $(cat err)"
[ -e custom.xml ] && fail "custom.xml written after a failure"

printf '{"1": {"inputs": {' >trunc.json
"$BIN" import comfy trunc.json -o t.xml >out 2>err
[ $? = 3 ] || fail "truncated JSON exit code"
[ "$(cat err)" = "sdflow: error: trunc.json:1:18: JSON error: string or '}' expected near end of file" ] ||
    fail "truncated JSON message: $(cat err)"
[ -e t.xml ] && fail "t.xml written after a failure"

"$BIN" import xml primitives_api.json >out 2>err
[ $? = 2 ] || fail "unknown format exit code"
grep -q "unknown format 'xml' (supported: comfy)" err || fail "unknown format message"
"$BIN" import --help >out 2>&1 || fail "--help"
grep -q "usage: sdflow import comfy" out || fail "--help text"

finish import.sh
