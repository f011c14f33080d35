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
# Stock graphs validate with their default parameters against a models directory holding tiny
# random files under the default names.
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
MK="${SDFLOW_BUILD_DIR:?}/sdflow_mkckpt"
mkdir -p "$T/models/checkpoints" "$T/models/vae"
"$MK" --preset tiny "$T/models/checkpoints/v1-5-pruned-emaonly.safetensors" >/dev/null || fail "sdflow_mkckpt"
"$MK" --preset tiny --in-channels 9 "$T/models/checkpoints/sd-v1-5-inpainting.safetensors" >/dev/null ||
    fail "sdflow_mkckpt --in-channels 9"
for g in "$SRC"/graphs/*.xml; do
    "$BIN" validate --models-dir "$T/models" --input-dir "$SRC/examples/input" "$g" >"$T/out" 2>&1 ||
        { cat "$T/out"; fail "stock graph $g does not validate"; }
done
echo "readme: $((fails == 0 ? 1 : 0)) passed, $fails failed"
[ "$fails" = 0 ]
