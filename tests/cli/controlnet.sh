#!/bin/bash
# graphs/controlnet-canny.xml end to end on tiny random files (a checkpoint and a ControlNet in
# diffusers' layout): it writes a PNG, a re-run comes from the cache without opening the ControlNet,
# a new strength samples again; an SDXL ControlNet and a checkpoint given as a ControlNet
# fail with their exact message and exit code 3 and write nothing.
set -u
BIN=${SDFLOW_BIN:?}
SRC=${SDFLOW_SOURCE_DIR:?}
MK=${SDFLOW_BUILD_DIR:?}/sdflow_mkckpt
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
check() { # check DESCRIPTION COMMAND...: the command must succeed
    local what=$1; shift
    if ! "$@"; then echo "FAIL: $what"; fails=$((fails + 1)); fi
}
run() { # run EXPECTED_EXIT ARGS...: stdout in $T/out, stderr in $T/err
    local want=$1; shift
    "$BIN" "$@" >"$T/out" 2>"$T/err"
    local got=$?
    if [ "$got" != "$want" ]; then
        echo "FAIL: sdflow $* exited $got, expected $want"; cat "$T/err"; fails=$((fails + 1))
    fi
}
mkdir -p "$T/models/checkpoints" "$T/models/controlnet"
"$MK" --preset tiny "$T/models/checkpoints/tiny.safetensors" >/dev/null || { echo "FAIL: mkckpt"; exit 1; }
"$MK" --preset tiny --kind controlnet-diffusers "$T/models/controlnet/canny.safetensors" >/dev/null ||
    { echo "FAIL: mkckpt controlnet"; exit 1; }
"$MK" --preset tiny --context 2048 --kind controlnet "$T/models/controlnet/xl.safetensors" >/dev/null ||
    { echo "FAIL: mkckpt xl controlnet"; exit 1; }
common=(--models-dir "$T/models" --input-dir "$SRC/examples/input" --output-dir "$T/o" --cache "$T/cache.db"
        --set checkpoint=tiny.safetensors --set steps=2 --set width=64 --set height=64)

run 0 run "$SRC/graphs/controlnet-canny.xml" "${common[@]}" --set controlnet=canny.safetensors
check "controlnet-canny writes one PNG" test "$(cat "$T/out")" = "$T/o/controlnet_00001_.png"
check "every node ran" grep -q "sdflow: done: 11 ran, 0 from cache" "$T/err"
run 0 run "$SRC/graphs/controlnet-canny.xml" "${common[@]}" --set controlnet=canny.safetensors
check "re-run: the sampler's latent comes from the cache" grep -q "sdflow: done: 1 ran, 1 from cache" "$T/err"
check "re-run: the ControlNet is not opened" bash -c '! grep -q "cnet (ControlNetLoader)" "$0"' "$T/err"
run 0 run "$SRC/graphs/controlnet-canny.xml" "${common[@]}" --set controlnet=canny.safetensors --set strength=0.5
check "another strength samples again, prompts and edges from the cache" grep -q "sdflow: done: 6 ran, 4 from cache" "$T/err"

before=$(ls "$T/o" | wc -l)
run 3 run "$SRC/graphs/controlnet-canny.xml" "${common[@]}" --set controlnet=xl.safetensors
check "SDXL ControlNet names the family" grep -qx "sdflow: error: node 'cnet' (ControlNetLoader): $T/models/controlnet/xl.safetensors: SDXL ControlNet detected; sdflow supports SD1.x ControlNets" "$T/err"
run 3 run "$SRC/graphs/controlnet-canny.xml" "${common[@]}" --set controlnet="$T/models/checkpoints/tiny.safetensors"
check "a checkpoint is no ControlNet" grep -qx "sdflow: error: node 'cnet' (ControlNetLoader): $T/models/checkpoints/tiny.safetensors: SD1.x file detected, not a ControlNet" "$T/err"
check "failed runs wrote nothing" test "$(ls "$T/o" | wc -l)" = "$before"

[ $fails = 0 ] && echo "controlnet.sh: all passed"
exit $((fails > 0))
