#!/bin/bash
# graphs/txt2img-lora.xml end to end on a tiny random checkpoint and LoRA: writes a PNG; a re-run
# comes from the cache, a new strength re-runs the sampler; a file whose keys match nothing (a
# checkpoint put in models/loras) and a LoRA for another architecture fail with their exact
# message and exit code 3 and write nothing; a ComfyUI API workflow with the loaders imports.
. "$(dirname "$0")/lib.bash"
ML=$BUILD/sdflow_mklora
mkdir -p "$T/models/checkpoints" "$T/models/loras"
"$MK" --preset tiny "$T/models/checkpoints/tiny.safetensors" >/dev/null || { echo "FAIL: mkckpt"; exit 1; }
"$ML" "$T/models/checkpoints/tiny.safetensors" "$T/models/loras/style.safetensors" || { echo "FAIL: mklora"; exit 1; }
# A LoRA for a wider model (64 base channels instead of 32) and a checkpoint used as a LoRA.
"$MK" --preset tiny --model-channels 64 --no-vae "$T/wide.safetensors" >/dev/null || { echo "FAIL: mkckpt wide"; exit 1; }
"$ML" "$T/wide.safetensors" "$T/models/loras/wide.safetensors" || { echo "FAIL: mklora wide"; exit 1; }
cp "$T/models/checkpoints/tiny.safetensors" "$T/models/loras/not-a-lora.safetensors"
common=(--models-dir "$T/models" --output-dir "$T/o" --cache "$T/cache.db" --set checkpoint=tiny.safetensors
        --set lora=style.safetensors --set steps=2 --set width=64 --set height=64)

run 0 run "$SRC/graphs/txt2img-lora.xml" "${common[@]}" --set strength_model=0.7
check "txt2img-lora writes one PNG" test "$(cat "$T/out")" = "$T/o/txt2img-lora_00001_.png"
check "everything ran" grep -q "sdflow: done: 8 ran, 0 from cache" "$T/err"
run 0 run "$SRC/graphs/txt2img-lora.xml" "${common[@]}" --set strength_model=0.7
check "re-run: only SaveImage runs" grep -q "sdflow: done: 1 ran, 1 from cache" "$T/err"
run 0 run "$SRC/graphs/txt2img-lora.xml" "${common[@]}" --set strength_model=0.4
check "new strength: the sampler runs again" grep -q "sampler (KSampler)" "$T/err"

before=$(ls "$T/o" | wc -l)
run 3 run "$SRC/graphs/txt2img-lora.xml" "${common[@]}" --set lora=not-a-lora.safetensors
check "no key matches" grep -q "^sdflow: error: node 'lora' (LoraLoader): $T/models/loras/not-a-lora.safetensors: no key matches an SD1.x UNet or text encoder tensor ([0-9]* keys: " "$T/err"
run 3 run "$SRC/graphs/txt2img-lora.xml" "${common[@]}" --set lora=wide.safetensors
check "another architecture" grep -q "^sdflow: error: node 'lora' (LoraLoader): $T/models/loras/wide.safetensors: LoRA key 'lora_unet_down_blocks_0_attentions_0_proj_in' (up \[64, 4, ...\], down \[4, 64, ...\]) does not fit tensor 'input_blocks.1.1.proj_in.weight' \[32, 32, ...\]$" "$T/err"
check "failed runs wrote nothing" test "$(ls "$T/o" | wc -l)" = "$before"

# A ComfyUI API workflow with both loaders imports one to one and validates.
cat >"$T/api.json" <<'JSON'
{"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
 "10": {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": "style.safetensors",
        "strength_model": 0.8, "strength_clip": 1.0}},
 "11": {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["10", 0], "lora_name": "style.safetensors",
        "strength_model": 0.5}},
 "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat embedding:star", "clip": ["10", 1]}}}
JSON
run 0 import comfy "$T/api.json" -o "$T/api.xml"
check "imported LoraLoader" grep -q '<node id="10" type="LoraLoader" version="1">' "$T/api.xml"
check "imported strength" grep -q '<input name="strength_model">0.5</input>' "$T/api.xml"
run 0 validate --models-dir "$T/models" "$T/api.xml"

[ $fails = 0 ] && echo "lora.sh: all passed"
exit $((fails > 0))
