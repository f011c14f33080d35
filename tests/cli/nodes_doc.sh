#!/bin/bash
# docs/nodes.md is exactly what `sdflow nodes --markdown` prints, so the node reference cannot go
# stale; `sdflow nodes` describes a type and rejects unknown ones.
. "$(dirname "$0")/lib.bash"

"$BIN" nodes --markdown >"$T/nodes.md" || fail "nodes --markdown"
if ! diff -u "$SRC/docs/nodes.md" "$T/nodes.md"; then
    fail "docs/nodes.md is stale: regenerate it with 'sdflow nodes --markdown > docs/nodes.md'"
fi
"$BIN" nodes PrimitiveInt >"$T/out" 2>&1 || fail "nodes PrimitiveInt"
grep -q "^PrimitiveInt  \[utils/primitive, version 1\]$" "$T/out" || fail "type header"
grep -q "^    value: INT, default 0$" "$T/out" || fail "input line"
"$BIN" nodes NoSuchNode >"$T/out" 2>&1
[ $? = 3 ] || fail "unknown type exit code"
grep -q "unknown node type 'NoSuchNode'" "$T/out" || fail "unknown type message"
"$BIN" nodes --help >"$T/out" 2>&1 || fail "--help"
grep -q "usage: sdflow nodes" "$T/out" || fail "--help text"

finish nodes_doc.sh
