#!/bin/bash
# SD2.x end to end on the tiny 512-base (eps) and 768-v (v-prediction) checkpoints (f16): the
# txt2img and img2img stock graphs take either unchanged; sdflow_mkckpt --inspect shows the
# prediction the file shows; ComfyUI's ModelSamplingDiscrete in an API-format workflow imports and
# runs, and another choice re-runs the KSampler with the cache on; an SD2 checkpoint in the SDXL
# graph and an SD1 LoRA on an SD2 model (and the reverse) are named before anything runs, with
# nothing written; an SD2 LoRA runs on the SD2 model; controlnet-canny.xml runs with SD2
# ControlNets in both layouts and names an SD1 ControlNet on SD2 conditioning before running.
. "$(dirname "$0")/lib.bash"
mkdir -p "$T/models/checkpoints" "$T/models/loras" "$T/in"
cp "$SRC/examples/input/shapes.png" "$T/in/"
"$MK" --preset sd2-tiny --dtype f16 "$T/models/checkpoints/sd2.safetensors" >/dev/null || { echo "FAIL: mkckpt"; exit 1; }
"$MK" --preset sd2-v-tiny --dtype f16 --seed 1 "$T/models/checkpoints/sd2v.safetensors" >/dev/null ||
    { echo "FAIL: mkckpt v"; exit 1; }
"$MK" --preset tiny "$T/models/checkpoints/sd1.safetensors" >/dev/null &&
    "$BUILD/sdflow_mklora" "$T/models/checkpoints/sd1.safetensors" "$T/models/loras/sd1.safetensors" &&
    "$BUILD/sdflow_mklora" "$T/models/checkpoints/sd2.safetensors" "$T/models/loras/sd2.safetensors" ||
    { echo "FAIL: mklora"; exit 1; }
mkdir -p "$T/models/controlnet"
"$MK" --preset sd2-tiny --kind controlnet --dtype f16 "$T/models/controlnet/sd2.safetensors" >/dev/null &&
    "$MK" --preset sd2-tiny --kind controlnet-diffusers --dtype f16 "$T/models/controlnet/sd2d.safetensors" \
        >/dev/null && "$MK" --preset tiny --kind controlnet "$T/models/controlnet/sd1.safetensors" >/dev/null ||
    { echo "FAIL: mkckpt controlnet"; exit 1; }
common=(--models-dir "$T/models" --output-dir "$T/o" --cache "$T/cache.db" --set width=64 --set height=64
        --set steps=3)

check "the 512-base file is eps" bash -c '"$0" --inspect "$1" | grep -qx prediction=eps' "$MK" \
    "$T/models/checkpoints/sd2.safetensors"
check "the 768-v file is v-prediction" bash -c '"$0" --inspect "$1" | grep -qx prediction=v_prediction' "$MK" \
    "$T/models/checkpoints/sd2v.safetensors"

for f in sd2 sd2v; do
    run 0 run "$SRC/graphs/txt2img.xml" "${common[@]}" --set checkpoint=$f.safetensors --set prefix=$f
    check "txt2img.xml with $f writes one PNG" test "$(cat "$T/out")" = "$T/o/${f}_00001_.png"
    run 0 run "$SRC/graphs/img2img.xml" --models-dir "$T/models" --input-dir "$T/in" --output-dir "$T/o" --no-cache \
        --set checkpoint=$f.safetensors --set steps=2
    check "img2img.xml with $f writes a PNG" test -s "$(head -n 1 "$T/out")"
done

# ComfyUI's ModelSamplingDiscrete between the loader and the KSampler (API format).
api() {
    cat <<EOJ
{"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd2.safetensors"}},
 "20": {"class_type": "ModelSamplingDiscrete", "inputs": {"sampling": "$1", "zsnr": $2, "model": ["4", 0]}},
 "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["4", 1]}},
 "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
 "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
 "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 3, "cfg": 7, "sampler_name": "euler",
       "scheduler": "normal", "denoise": 1, "model": ["20", 0], "positive": ["6", 0], "negative": ["7", 0],
       "latent_image": ["5", 0]}},
 "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
 "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "msd", "images": ["8", 0]}}}
EOJ
}
api v_prediction true >"$T/msd_v.json"
api eps false >"$T/msd_eps.json"
run 0 import comfy "$T/msd_v.json" -o "$T/msd_v.xml"
run 0 import comfy "$T/msd_eps.json" -o "$T/msd_eps.xml"
run 0 run "$T/msd_v.xml" --models-dir "$T/models" --output-dir "$T/o" --cache "$T/cache.db"
check "ModelSamplingDiscrete (v_prediction, zsnr) imports and runs" test "$(cat "$T/out")" = "$T/o/msd_00001_.png"
run 0 run "$T/msd_eps.xml" --models-dir "$T/models" --output-dir "$T/o" --cache "$T/cache.db"
check "another sampling choice: the KSampler runs again" grep -q "^  ran .* 3 (KSampler)$" "$T/err"
check "another sampling choice: the prompts come from the cache" bash -c '! grep -q "^  ran .* 6 (" "$0"' "$T/err"
check "another sampling choice: another image" bash -c '! cmp -s "$0" "$1"' "$T/o/msd_00001_.png" \
    "$T/o/msd_00002_.png"

for cn in sd2 sd2d; do
    run 0 run "$SRC/graphs/controlnet-canny.xml" "${common[@]}" --input-dir "$T/in" --set checkpoint=sd2.safetensors \
        --set controlnet=$cn.safetensors --set prefix=cn_$cn
    check "controlnet-canny.xml with an SD2 checkpoint and ControlNet ($cn) writes a PNG" test -s "$(head -n 1 "$T/out")"
done

before=$(ls "$T/o" | wc -l)
run 3 run "$SRC/graphs/controlnet-canny.xml" "${common[@]}" --input-dir "$T/in" --set checkpoint=sd2.safetensors \
    --set controlnet=sd1.safetensors
check "an SD1 ControlNet on SD2 conditioning is named before anything runs" \
    grep -q "node 'apply' input 'control_net': the ControlNet is SD1.x; the conditioning on 'positive' was made by SD2.x text encoders" "$T/err"
run 3 run "$SRC/graphs/sdxl.xml" "${common[@]}" --set checkpoint=sd2.safetensors
check "an SD2 checkpoint in the SDXL graph is named before anything runs" \
    grep -q "sdxl.xml:[0-9]*: node 'positive' input 'clip': the text encoders are SD2.x; this node takes SDXL ones" "$T/err"
run 3 run "$SRC/graphs/txt2img-lora.xml" "${common[@]}" --set checkpoint=sd2.safetensors --set lora=sd1.safetensors
check "an SD1 LoRA on an SD2 model is refused before anything runs" \
    grep -q "node 'lora' input 'lora_name': parameter 'lora': $T/models/loras/sd1.safetensors: SD1.x LoRA detected (key '.*proj_in.*'); the model is SD2.x" "$T/err"
check "nothing ran" bash -c '! grep -q "^  ran " "$0"' "$T/err"
run 3 run "$SRC/graphs/txt2img-lora.xml" "${common[@]}" --set checkpoint=sd1.safetensors --set lora=sd2.safetensors
check "an SD2 LoRA on an SD1 model is refused before anything runs" \
    grep -q "$T/models/loras/sd2.safetensors: SD2.x LoRA detected (key '.*proj_in.*'); the model is SD1.x" "$T/err"
check "failed runs wrote nothing" test "$(ls "$T/o" | wc -l)" = "$before"
run 0 run "$SRC/graphs/txt2img-lora.xml" "${common[@]}" --set checkpoint=sd2.safetensors --set lora=sd2.safetensors
check "an SD2 LoRA on the SD2 model runs" test -s "$(cat "$T/out")"

echo "sd2: $((fails == 0 ? 1 : 0)) passed, $fails failed"
[ "$fails" = 0 ]
