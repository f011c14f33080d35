#!/bin/bash
# The stock graphs end to end on a tiny random checkpoint: graphs/txt2img.xml,
# graphs/img2img.xml and graphs/regional-prompt.xml write a PNG, examples/contact_sheet.lua a 3x3 grid; a re-run comes from the cache without opening the checkpoint;
# bad input fails with its exact message and exit code and writes nothing.
. "$(dirname "$0")/lib.bash"
mkdir -p "$T/models/checkpoints" "$T/in"
"$MK" --preset tiny "$T/models/checkpoints/tiny.safetensors" >/dev/null || { echo "FAIL: mkckpt"; exit 1; }
"$MK" --kind sd3-stub "$T/models/checkpoints/sd3.safetensors" >/dev/null || { echo "FAIL: mkckpt sd3"; exit 1; }
cp "$SRC/examples/input/shapes.png" "$T/in/"
base=(--models-dir "$T/models" --input-dir "$T/in" --output-dir "$T/o" --cache "$T/cache.db"
      --set checkpoint=tiny.safetensors --set steps=3)
common=("${base[@]}" --set width=64 --set height=64)

run 0 run "$SRC/graphs/txt2img.xml" "${common[@]}" --set sampler=dpmpp_2m --set scheduler=karras
check "txt2img writes one PNG" test "$(cat "$T/out")" = "$T/o/txt2img_00001_.png"
check "everything ran" grep -q "sdflow: done: 7 ran, 0 from cache" "$T/err"
run 0 run "$SRC/graphs/txt2img.xml" "${common[@]}" --set sampler=dpmpp_2m --set scheduler=karras
check "re-run: only SaveImage runs, the loader is not needed" \
    grep -q "sdflow: done: 1 ran, 1 from cache, 5 skipped" "$T/err"
check "re-run: the loader did not run" bash -c '! grep -q "ckpt (CheckpointLoaderSimple)" "$0"' "$T/err"
run 0 run "$SRC/graphs/img2img.xml" "${base[@]}" --set denoise=0.5
check "img2img writes one PNG" test "$(cat "$T/out")" = "$T/o/img2img_00001_.png"
run 0 run "$SRC/graphs/regional-prompt.xml" "${base[@]}" --set width=96 --set height=64
check "regional-prompt writes one PNG" test "$(cat "$T/out")" = "$T/o/regional_00001_.png"
check "regional-prompt: two areas set and combined" \
    test "$(grep -c -e '^  ran .*(ConditioningSetAreaPercentage)$' -e '^  ran .*(ConditioningCombine)$' "$T/err")" = 4

SDFLOW_CACHE=$T/lua.db run 0 lua "$SRC/examples/contact_sheet.lua" "$T/models" tiny.safetensors "$T/sheet" 64 2
check "contact sheet: 9 cells" grep -q "^3 seeds x 3 cfg values: 32 nodes ran, 0 from the cache$" "$T/out"
check "contact sheet written" grep -q "^wrote $T/sheet/contact_sheet_00001_.png$" "$T/out"
check "contact sheet 3x3 cells of 64 px, 4 px apart" \
    bash -c 'head -c 24 "$0" | tail -c 8 | od -An -tx1 | tr -d " \n" | grep -qx 000000c8000000c8' "$T/sheet/contact_sheet_00001_.png"

# Any multiple of 8 works, as in ComfyUI: a 72x64 image is a 9x8 latent, whose skips halve to
# 5x4 and 3x2 and whose decoder upsamples back to those sizes.
run 0 run "$SRC/graphs/txt2img.xml" "${common[@]}" --set width=72
check "a 72x64 image" bash -c 'head -c 24 "$0" | tail -c 8 | od -An -tx1 | tr -d " \n" | grep -qx 0000004800000040' "$(head -n 1 "$T/out")"

before=$(ls "$T/o" | wc -l)
run 3 run "$SRC/graphs/txt2img.xml" "${common[@]}" --set width=100
check "width message" grep -qx "$SRC/graphs/txt2img.xml:34: node 'latent' input 'width': parameter 'width': 100 is not a multiple of 8" "$T/err"
run 3 run "$SRC/graphs/txt2img.xml" "${common[@]}" --set height=36
check "height message" grep -qx "$SRC/graphs/txt2img.xml:35: node 'latent' input 'height': parameter 'height': 36 is not a multiple of 8" "$T/err"
run 3 run "$SRC/graphs/txt2img.xml" "${common[@]}" --set steps=0
check "steps 0 message" grep -q "txt2img.xml:41: node 'sampler' input 'steps': parameter 'steps': 0 is out of range \[1, 10000\]" "$T/err"
run 3 run "$SRC/graphs/txt2img.xml" "${common[@]}" --set sampler=eulr
check "unknown sampler lists the valid ones" grep -q "'eulr' is not one of: euler euler_cfg_pp euler_ancestral .* sa_solver sa_solver_pece ddim uni_pc uni_pc_bh2$" "$T/err"
run 3 run "$SRC/graphs/txt2img.xml" "${common[@]}" --set checkpoint=missing.safetensors
check "missing checkpoint names the directories searched" \
    grep -q "checkpoints file 'missing.safetensors' not found (searched: $T/models/checkpoints)" "$T/err"
run 3 run "$SRC/graphs/txt2img.xml" "${common[@]}" --set checkpoint=sd3.safetensors
check "SD3 names the family, before anything runs" grep -qx ".*txt2img.xml:[0-9]*: node 'ckpt' input 'ckpt_name': parameter 'checkpoint': $T/models/checkpoints/sd3.safetensors: SD3 checkpoint detected; sdflow supports SD1.x, SD2.x, SD2.x unCLIP, SDXL, SDXL refiner, FLUX" "$T/err"
check "failed runs wrote nothing" test "$(ls "$T/o" | wc -l)" = "$before"

[ $fails = 0 ] && echo "txt2img.sh: all passed"
exit $((fails > 0))
