#!/bin/bash
# Text-encoder files through the CLI: an API-format ComfyUI workflow whose CLIP comes from
# CLIPLoader (a clip_l file in models/text_encoders) imports and runs with an SD1 checkpoint's
# UNet and VAE; DualCLIPLoader type flux on clip_l + a T5 GGUF in models/clip validates; a T5 file
# given as CLIP-L and a clip_g where FLUX's clip_l belongs are named in one line before anything
# runs (exit 3), with nothing written.
. "$(dirname "$0")/lib.bash"
TE=$BUILD/sdflow_mktextenc
mkdir -p "$T/models/checkpoints" "$T/models/text_encoders" "$T/models/clip"
"$MK" --preset tiny "$T/models/checkpoints/sd1.safetensors" >/dev/null || { echo "FAIL: mkckpt"; exit 1; }
for k in clip-l clip-g t5; do
    "$TE" --dtype f16 "$k" "$T/models/text_encoders/$k.safetensors" || { echo "FAIL: mktextenc $k"; exit 1; }
done
"$TE" t5-gguf "$T/models/text_encoders/t5.safetensors" "$T/models/clip/t5-Q8_0.gguf" || { echo "FAIL: gguf"; exit 1; }

api() {
    cat <<EOJ
{"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd1.safetensors"}},
 "10": {"class_type": "CLIPLoader", "inputs": {"clip_name": "$1", "type": "stable_diffusion"}},
 "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cat", "clip": ["10", 0]}},
 "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["10", 0]}},
 "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
 "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 2, "cfg": 7, "sampler_name": "euler",
       "scheduler": "normal", "denoise": 1, "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0],
       "latent_image": ["5", 0]}},
 "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
 "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "te", "images": ["8", 0]}}}
EOJ
}
api clip-l.safetensors >"$T/clip_l.json"
api t5.safetensors >"$T/t5.json"
run 0 import comfy "$T/clip_l.json" -o "$T/clip_l.xml"
run 0 import comfy "$T/t5.json" -o "$T/t5.xml"
run 0 run "$T/clip_l.xml" --models-dir "$T/models" --output-dir "$T/o" --no-cache
check "CLIPLoader's clip_l with an SD1 checkpoint writes a PNG" test "$(cat "$T/out")" = "$T/o/te_00001_.png"

cat >"$T/flux.xml" <<'EOX'
<workflow version="1">
  <node id="clip" type="DualCLIPLoaderGGUF"><input name="clip_name1">t5-Q8_0.gguf</input>
    <input name="clip_name2">clip-l.safetensors</input><input name="type">flux</input></node>
  <node id="p" type="CLIPTextEncodeFlux"><input name="clip" from="clip" output="CLIP"/>
    <input name="clip_l">a cat</input><input name="t5xxl">a cat</input></node>
</workflow>
EOX
run 0 validate "$T/flux.xml" --models-dir "$T/models" # DualCLIPLoaderGGUF flux, a T5 GGUF in models/clip
sed -e 's/clip-l.safetensors/clip-g.safetensors/' "$T/flux.xml" >"$T/flux_g.xml"

before=$(ls "$T/o" | wc -l)
run 3 run "$T/t5.xml" --models-dir "$T/models" --output-dir "$T/o" --no-cache
check "a T5 file as CLIP-L is named in one line" \
    grep -q "node '10' input 'type': type stable_diffusion takes one CLIP-L, OpenCLIP-H or OpenCLIP-bigG text model; clip_name is T5-XXL" "$T/err"
run 3 validate "$T/flux_g.xml" --models-dir "$T/models"
check "a clip_g where FLUX's clip_l belongs is named" \
    grep -q "node 'clip' input 'type': type flux takes CLIP-L + T5-XXL; clip_name1 is T5-XXL, clip_name2 is OpenCLIP-bigG" "$T/err"
check "nothing ran" bash -c '! grep -q "^  ran " "$0"' "$T/err"
check "failed runs wrote nothing" test "$(ls "$T/o" | wc -l)" = "$before"

finish text_encoders
