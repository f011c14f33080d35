#!/bin/bash
# --precision bf16 (docs/precision.md): a txt2img run in bf16 differs from the fp32 one, is
# cached under its own keys (an fp32 run after it computes again, a bf16 re-run comes from the
# cache), records the precision in the PNG's provenance, and replays identically without being
# told the precision; bad names are refused with the exit code of a usage error.
. "$(dirname "$0")/lib.bash"
mkdir -p "$T/models/checkpoints"
"$MK" --preset tiny "$T/models/checkpoints/tiny.safetensors" >/dev/null || { echo "FAIL: mkckpt"; exit 1; }
export TMPDIR=$T
common=(--models-dir "$T/models" --cache "$T/cache.db" --set checkpoint=tiny.safetensors --set steps=2
        --set width=64 --set height=64)

run 2 run "$SRC/graphs/txt2img.xml" "${common[@]}" --precision fp16 --output-dir "$T/x"
check "unknown precision" grep -qx "sdflow: error: unknown precision 'fp16' (fp32 or bf16)" "$T/err"
check "nothing written" test ! -e "$T/x"

run_bf16_or_skip precision.sh run "$SRC/graphs/txt2img.xml" "${common[@]}" --precision bf16 --output-dir "$T/b"
check "bf16 run: everything ran" grep -q "sdflow: done: 7 ran, 0 from cache" "$T/err"
run 0 run "$SRC/graphs/txt2img.xml" "${common[@]}" --output-dir "$T/f"
check "fp32 after bf16: nothing from the bf16 cache" grep -q "sdflow: done: 7 ran, 0 from cache" "$T/err"
SDFLOW_PRECISION=bf16 run 0 run "$SRC/graphs/txt2img.xml" "${common[@]}" --output-dir "$T/b2"
check "bf16 re-run (from SDFLOW_PRECISION): from the cache" grep -q "sdflow: done: 1 ran, 1 from cache" "$T/err"

B=$T/b/txt2img_00001_.png F=$T/f/txt2img_00001_.png
check "bf16 and fp32 images differ" bash -c '! cmp -s "$0" "$1"' "$B" "$F"
check "provenance records bf16" grep -aq '"precision":"bf16"' "$B"
check "fp32 provenance has no precision" bash -c '! grep -aq "\"precision\"" "$0"' "$F"
run 0 replay "$B" --models-dir "$T/models"
check "bf16 image replays identically" grep -q "identical" "$T/out"
run 0 replay "$F" --models-dir "$T/models"
check "fp32 image replays identically" grep -q "identical" "$T/out"
finish precision.sh
