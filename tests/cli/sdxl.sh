#!/bin/bash
# graphs/sdxl.xml and graphs/sdxl-refiner.xml end to end on the tiny SDXL base and refiner
# checkpoints (f16): each writes a PNG, the base-then-refiner graph runs both KSamplerAdvanced;
# ComfyUI's SDXL refiner example imports and runs; the family-agnostic stock graphs (img2img,
# hires-fix, inpaint) take the SDXL checkpoint unchanged; txt2img-lora.xml takes an SDXL
# checkpoint with SDXL LoRAs in kohya and PEFT layouts, every key matched; controlnet-canny.xml
# takes an SDXL checkpoint and an SDXL ControlNet in either layout (an SD1 ControlNet is named before
# running); swapped checkpoints and
# an SD1 LoRA on the SDXL model are named before anything runs, with nothing written.
. "$(dirname "$0")/lib.bash"
mkdir -p "$T/models/checkpoints" "$T/in"
cp "$SRC/examples/input/shapes.png" "$SRC/examples/input/shapes-inpaint.png" "$T/in/"
"$MK" --preset sdxl-tiny --dtype f16 "$T/models/checkpoints/base.safetensors" >/dev/null || { echo "FAIL: mkckpt"; exit 1; }
"$MK" --preset sdxl-refiner-tiny --dtype f16 --seed 1 "$T/models/checkpoints/refiner.safetensors" >/dev/null ||
    { echo "FAIL: mkckpt refiner"; exit 1; }
mkdir -p "$T/models/loras"
"$MK" --preset tiny "$T/sd1.safetensors" >/dev/null && "$BUILD/sdflow_mklora" "$T/sd1.safetensors" \
    "$T/models/loras/sd1.safetensors" || { echo "FAIL: mklora"; exit 1; }
"$BUILD/sdflow_mklora" "$T/models/checkpoints/base.safetensors" "$T/models/loras/xl.safetensors" &&
    "$BUILD/sdflow_mklora" --peft "$T/models/checkpoints/base.safetensors" "$T/models/loras/xl_peft.safetensors" ||
    { echo "FAIL: mklora sdxl"; exit 1; }
mkdir -p "$T/models/controlnet"
"$MK" --preset sdxl-tiny --kind controlnet --dtype f16 "$T/models/controlnet/xl.safetensors" >/dev/null &&
    "$MK" --preset sdxl-tiny --kind controlnet-diffusers --dtype f16 "$T/models/controlnet/xl_diffusers.safetensors" \
        >/dev/null && "$MK" --preset tiny --kind controlnet "$T/models/controlnet/sd1.safetensors" >/dev/null ||
    { echo "FAIL: mkckpt controlnet"; exit 1; }
common=(--models-dir "$T/models" --output-dir "$T/o" --cache "$T/cache.db" --set width=64 --set height=64
        --set steps=4)

run 0 run "$SRC/graphs/sdxl.xml" "${common[@]}" --set checkpoint=base.safetensors
check "sdxl writes one PNG" test "$(cat "$T/out")" = "$T/o/sdxl_00001_.png"
check "sdxl: everything ran" grep -q "sdflow: done: 7 ran, 0 from cache" "$T/err"
run 0 run "$SRC/graphs/sdxl-refiner.xml" "${common[@]}" --set checkpoint=base.safetensors \
    --set refiner=refiner.safetensors --set refine_at=3
check "sdxl-refiner writes one PNG" test "$(cat "$T/out")" = "$T/o/sdxl_refined_00001_.png"
check "sdxl-refiner: both samplers ran" \
    test "$(grep -c -e '^  ran .*_sampler (KSamplerAdvanced)$' "$T/err")" = 2
check "sdxl-refiner: the refiner's prompts ran" \
    test "$(grep -c -e '^  ran .*(CLIPTextEncodeSDXLRefiner)$' "$T/err")" = 2

# ComfyUI's SDXL refiner example in API format (its node names, inputs and values) imports and runs.
cat >"$T/refiner_api.json" <<'EOF'
{"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "base.safetensors"}},
 "12": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "refiner.safetensors"}},
 "6": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"width": 4096, "height": 4096, "crop_w": 0, "crop_h": 0,
       "target_width": 64, "target_height": 64, "text_g": "a cat", "text_l": "a cat", "clip": ["4", 1]}},
 "7": {"class_type": "CLIPTextEncodeSDXL", "inputs": {"width": 4096, "height": 4096, "crop_w": 0, "crop_h": 0,
       "target_width": 64, "target_height": 64, "text_g": "", "text_l": "", "clip": ["4", 1]}},
 "15": {"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {"ascore": 6, "width": 2048, "height": 2048,
        "text": "a cat", "clip": ["12", 1]}},
 "16": {"class_type": "CLIPTextEncodeSDXLRefiner", "inputs": {"ascore": 2.5, "width": 2048, "height": 2048,
        "text": "", "clip": ["12", 1]}},
 "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
 "10": {"class_type": "KSamplerAdvanced", "inputs": {"add_noise": "enable", "noise_seed": 721897303308196,
        "steps": 4, "cfg": 8, "sampler_name": "euler", "scheduler": "normal", "start_at_step": 0, "end_at_step": 3,
        "return_with_leftover_noise": "enable", "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
        "latent_image": ["5", 0]}},
 "11": {"class_type": "KSamplerAdvanced", "inputs": {"add_noise": "disable", "noise_seed": 0, "steps": 4, "cfg": 8,
        "sampler_name": "euler", "scheduler": "normal", "start_at_step": 3, "end_at_step": 10000,
        "return_with_leftover_noise": "disable", "model": ["12", 0], "positive": ["15", 0], "negative": ["16", 0],
        "latent_image": ["10", 0]}},
 "17": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["12", 2]}},
 "19": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["17", 0]}}}
EOF
run 0 import comfy "$T/refiner_api.json" -o "$T/refiner_api.xml"
run 0 run "$T/refiner_api.xml" --models-dir "$T/models" --output-dir "$T/o" --no-cache
check "ComfyUI's SDXL refiner workflow imports and runs" test "$(cat "$T/out")" = "$T/o/ComfyUI_00001_.png"

for g in img2img hires-fix inpaint; do
    size=()
    [ "$g" = hires-fix ] && size=(--set width=64 --set height=64 --set hires_steps=2)
    run 0 run "$SRC/graphs/$g.xml" --models-dir "$T/models" --input-dir "$T/in" --output-dir "$T/o" --no-cache \
        --set checkpoint=base.safetensors --set steps=2 "${size[@]}"
    check "$g.xml with an SDXL checkpoint writes a PNG" test -s "$(head -n 1 "$T/out")"
done

lora_run=(--models-dir "$T/models" --no-cache --set width=64 --set height=64 --set steps=4)
for l in xl xl_peft; do
    run 0 run "$SRC/graphs/txt2img-lora.xml" "${lora_run[@]}" --output-dir "$T/o_$l" \
        --set checkpoint=base.safetensors --set lora=$l.safetensors --set strength_clip=0.7
    check "txt2img-lora.xml with an SDXL checkpoint and LoRA ($l) writes a PNG" test -s "$(head -n 1 "$T/out")"
    check "every key of the SDXL LoRA ($l) matched" bash -c '! grep -q "matched nothing" "$0"' "$T/err"
done

for cn in xl xl_diffusers; do
    run 0 run "$SRC/graphs/controlnet-canny.xml" "${lora_run[@]}" --output-dir "$T/o_$cn" --input-dir "$T/in" \
        --set checkpoint=base.safetensors --set controlnet=$cn.safetensors
    check "controlnet-canny.xml with an SDXL checkpoint and ControlNet ($cn) writes a PNG" \
        test -s "$(head -n 1 "$T/out")"
done

before=$(ls "$T/o" | wc -l)
run 3 run "$SRC/graphs/controlnet-canny.xml" "${common[@]}" --input-dir "$T/in" --set checkpoint=base.safetensors \
    --set controlnet=sd1.safetensors
check "an SD1 ControlNet on SDXL conditioning is named before anything runs" \
    grep -q "node 'apply' input 'control_net': the ControlNet is SD1.x; the conditioning on 'positive' was made by SDXL text encoders" "$T/err"
run 3 run "$SRC/graphs/sdxl.xml" "${common[@]}" --set checkpoint=refiner.safetensors
check "a refiner in the base graph is named before anything runs" \
    grep -q "sdxl.xml:[0-9]*: node 'positive' input 'clip': the text encoders are SDXL refiner; this node takes SDXL ones" "$T/err"
run 3 run "$SRC/graphs/sdxl-refiner.xml" "${common[@]}" --set checkpoint=refiner.safetensors \
    --set refiner=base.safetensors
check "swapped checkpoints: the refiner node named" \
    grep -q "node 'refiner_positive' input 'clip': the text encoders are SDXL; this node takes SDXL refiner ones" "$T/err"
run 3 run "$SRC/graphs/txt2img-lora.xml" "${common[@]}" --set checkpoint=base.safetensors --set lora=sd1.safetensors
check "an SD1 LoRA on an SDXL model is refused before anything runs" \
    grep -q "node 'lora' input 'lora_name': parameter 'lora': $T/models/loras/sd1.safetensors: SD1.x LoRA detected (key '[^']*'); the model is SDXL" "$T/err"
check "nothing ran" bash -c '! grep -q "^  ran " "$0"' "$T/err"
check "failed runs wrote nothing" test "$(ls "$T/o" | wc -l)" = "$before"

echo "sdxl: $((fails == 0 ? 1 : 0)) passed, $fails failed"
[ "$fails" = 0 ]
