#!/bin/bash
# graphs/hires-fix.xml end to end on a tiny random checkpoint: a 64x64 base image upscaled 1.5x in
# latent space and resampled gives a 96x96 PNG; changing only the upscale method reuses the cached
# first pass; graphs/upscale-esrgan.xml on a tiny random x4 model gives a 4x PNG; bad values fail
# with their exact message and write nothing.
. "$(dirname "$0")/lib.bash"
# PNG width and height as 16 hex digits (IHDR).
png_size() { head -c 24 "$1" | tail -c 8 | od -An -tx1 | tr -d ' \n'; }

mkdir -p "$T/models/checkpoints" "$T/models/upscale_models"
"$MK" --preset tiny "$T/models/checkpoints/tiny.safetensors" >/dev/null || { echo "FAIL: mkckpt"; exit 1; }
"$BUILD/sdflow_mkesrgan" --nf 8 --gc 4 --blocks 1 "$T/models/upscale_models/tiny-x4.safetensors" ||
    { echo "FAIL: mkesrgan"; exit 1; }
common=(--models-dir "$T/models" --output-dir "$T/o" --cache "$T/cache.db" --set checkpoint=tiny.safetensors
        --set steps=2 --set hires_steps=2 --set width=64 --set height=64)

run 0 run "$SRC/graphs/hires-fix.xml" "${common[@]}"
check "hires fix writes one PNG" test "$(cat "$T/out")" = "$T/o/hires_00001_.png"
check "hires fix: 96x96" test "$(png_size "$T/o/hires_00001_.png")" = 0000006000000060
check "everything ran" grep -q "sdflow: done: 9 ran, 0 from cache" "$T/err"
run 0 run "$SRC/graphs/hires-fix.xml" "${common[@]}" --set upscale_method=bislerp
check "bislerp: only the upscale and what follows run" grep -q "sdflow: done: 5 ran, 3 from cache, 1 skipped" "$T/err"
check "bislerp: the first pass comes from the cache" grep -Eq "^  cached +base \(KSampler\)$" "$T/err"
check "bislerp: 96x96" test "$(png_size "$T/o/hires_00002_.png")" = 0000006000000060

run 0 run "$SRC/graphs/upscale-esrgan.xml" --models-dir "$T/models" --input-dir "$SRC/examples/input" \
    --output-dir "$T/o" --cache "$T/cache.db" --set model=tiny-x4.safetensors
check "upscale-esrgan writes one PNG" test "$(cat "$T/out")" = "$T/o/upscaled_00001_.png"
in_size=$(png_size "$SRC/examples/input/shapes.png")
w=$((16#${in_size:0:8} * 4)) h=$((16#${in_size:8:8} * 4))
check "upscale-esrgan: 4x the input" test "$(png_size "$T/o/upscaled_00001_.png")" = "$(printf %08x%08x $w $h)"

before=$(ls "$T/o" | wc -l)
run 3 run "$SRC/graphs/hires-fix.xml" "${common[@]}" --set scale_by=9
check "scale_by message" grep -q "node 'upscale' input 'scale_by': parameter 'scale_by': 9 is out of range \[0.01, 8\]" "$T/err"
run 3 run "$SRC/graphs/hires-fix.xml" "${common[@]}" --set upscale_method=lanczos
check "unknown method lists the valid ones" \
    grep -q "'lanczos' is not one of: nearest-exact bilinear area bicubic bislerp$" "$T/err"
check "nothing written on failure" test "$(ls "$T/o" | wc -l)" = "$before"
echo "hires_fix: $((fails == 0 ? 1 : 0)) passed, $fails failed"
[ "$fails" = 0 ]
