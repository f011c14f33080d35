#!/bin/bash
# The README's test command is the one .ci/run runs, and the stock graphs validate.
set -u
SRC=${SDFLOW_SOURCE_DIR:?}
BIN=${SDFLOW_BIN:?}
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

test_cmd=$(grep -m1 '^sh tools/install-deps.sh && cmake -S . -B build -DSDFLOW_WERROR=ON' "$SRC/README.md")
[ -n "$test_cmd" ] || fail "README has no test command"
grep -qxF "$test_cmd" "$SRC/.ci/run" || fail ".ci/run does not run the README's test command: $test_cmd"
for g in "$SRC"/graphs/*.xml; do
    "$BIN" validate --models-dir "$SRC/tests/data/models" --input-dir "$SRC/examples/input" "$g" >/dev/null 2>&1 ||
        { "$BIN" validate --input-dir "$SRC/examples/input" "$g"; fail "stock graph $g does not validate"; }
done
echo "readme: $((fails == 0 ? 1 : 0)) passed, $fails failed"
[ "$fails" = 0 ]
