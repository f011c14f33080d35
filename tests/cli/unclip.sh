#!/bin/bash
# graphs/sdxl-revision.xml end to end on tiny random files (an sdxl-tiny checkpoint, whose pooled
# output is 160 wide, and a CLIP vision model with 160-wide image_embeds): it writes a PNG, and a
# new noise_augmentation samples again from the cached image encoding; a CLIP vision model of
# another width fails with a one-line error naming the widths (exit 3) and writes nothing.
# graphs/sd2-unclip.xml on the sd2-unclip-tiny checkpoint (f16, under a .ckpt name as the released
# files): it writes a PNG; an SD1 checkpoint in it is a one-line validation error (exit 3).
. "$(dirname "$0")/lib.bash"
G="$SRC/tests/data/goldens"
mkdir -p "$T/models/checkpoints" "$T/models/clip_vision"
"$MK" --preset sdxl-tiny "$T/models/checkpoints/xl.safetensors" >/dev/null || { echo "FAIL: mkckpt"; exit 1; }
cp "$G/clip_vision_proj160.safetensors" "$T/models/clip_vision/clip_vision_g.safetensors"
cp "$G/clip_vision_hf.safetensors" "$T/models/clip_vision/vit-narrow.safetensors"
common=(--models-dir "$T/models" --input-dir "$SRC/examples/input" --output-dir "$T/o" --cache "$T/cache.db"
        --set checkpoint=xl.safetensors --set steps=2 --set width=64 --set height=64 --set prompt="a house")

run 0 run "$SRC/graphs/sdxl-revision.xml" "${common[@]}"
check "sdxl-revision writes one PNG" test "$(cat "$T/out")" = "$T/o/sdxl-revision_00001_.png"
run 0 run "$SRC/graphs/sdxl-revision.xml" "${common[@]}" --set noise_augmentation=0.3
check "another noise augmentation samples again, the image encoding from the cache" grep -q "encode_image (CLIPVisionEncode): cached\|cached .*encode_image" "$T/err"
before=$(ls "$T/o" | wc -l)
run 3 run "$SRC/graphs/sdxl-revision.xml" "${common[@]}" --set clip_vision=vit-narrow.safetensors
check "image embeddings of another width are named" grep -q "entry 0's unCLIP image embeddings are 24 wide; the model's ADM input takes 160" "$T/err"
check "the failed run wrote nothing" test "$(ls "$T/o" | wc -l)" = "$before"

"$MK" --preset sd2-unclip-tiny --dtype f16 "$T/models/checkpoints/sd21-unclip-h.ckpt" >/dev/null || fail "mkckpt unclip"
"$MK" --preset tiny "$T/models/checkpoints/sd1.safetensors" >/dev/null || fail "mkckpt sd1"
u=(--models-dir "$T/models" --input-dir "$SRC/examples/input" --output-dir "$T/o" --cache "$T/cache.db" --set steps=2
   --set width=64 --set height=64)
run 0 run "$SRC/graphs/sd2-unclip.xml" "${u[@]}"
check "sd2-unclip writes one PNG" test "$(cat "$T/out")" = "$T/o/sd2-unclip_00001_.png"
before=$(ls "$T/o" | wc -l)
run 3 run "$SRC/graphs/sd2-unclip.xml" "${u[@]}" --set checkpoint=sd1.safetensors
check "an SD1 checkpoint in unCLIPCheckpointLoader is one line naming it" \
    grep -q "^.*sd1.safetensors: no CLIP image tower (embedder.model.visual.\*) in this SD1.x checkpoint; load it with CheckpointLoaderSimple" "$T/err"
check "the refused run wrote nothing" test "$(ls "$T/o" | wc -l)" = "$before"
finish unclip.sh
