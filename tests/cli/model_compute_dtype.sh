#!/bin/bash
# Per-node precision (docs/precision.md "Per-node precision"): ComfyUI's ModelComputeDtype makes
# the model's forward calls compute in its dtype whatever the run's precision, and nothing else:
# - in an fp32 run, dtype bf16 gives another image, computed again (not served from the fp32
#   cache), and it replays byte for byte from the PNG (the graph carries the dtype; the PNG's
#   run-level "precision" field stays absent);
# - the model's part equals a --precision bf16 run's: with zeroed conditionings (so that the
#   text encoder's precision does not matter) and the latents compared, a bf16 model in an fp32
#   run then a default one equals, bit for bit, a default model in a bf16 run then an fp32 one
#   (so the context's precision is restored after the model's calls);
# - FLUX's transformer likewise (its own forward call);
# - fp16 computes in fp32 (sdflow has no fp16 arithmetic); "default" is the run's precision;
# - ComfyUI's API and UI formats import it, XML and Lua run it; an unknown dtype is refused with
#   one line naming node and input.
# bf16 needs oneDNN and a CPU device: without them the test says it skipped (run_bf16_or_skip).
. "$(dirname "$0")/lib.bash"
mkdir -p "$T/models/checkpoints" "$T/in"
"$MK" --preset tiny "$T/models/checkpoints/tiny.safetensors" >/dev/null || { echo "FAIL: mkckpt"; exit 1; }
export TMPDIR=$T
cd "$T" || exit 1

# txt2img.xml with ModelComputeDtype between the loader and the KSampler.
sed -e 's|<node id="sampler" type="KSampler">|<node id="mcd" type="ModelComputeDtype">\
    <input name="model" from="ckpt" output="MODEL"/>\
    <input name="dtype" param="dtype"/>\
  </node>\
  &|' -e 's|<input name="model" from="ckpt" output="MODEL"/>\(\s*<input name="seed"\)|<input name="model" from="mcd" output="MODEL"/>\1|' \
    -e 's|<param name="prefix"|<param name="dtype" type="ENUM" default="default">the model'"'"'s precision</param>\
  &|' "$SRC/graphs/txt2img.xml" >mcd.xml
# The KSampler's model line follows its node line: put the link on the new node.
awk '/<node id="sampler"/ {s=1} s && /from="ckpt" output="MODEL"/ {sub(/from="ckpt"/, "from=\"mcd\""); s=0} {print}' \
    mcd.xml >mcd2.xml && mv mcd2.xml mcd.xml
grep -q 'from="mcd" output="MODEL"' mcd.xml || fail "mcd.xml: the KSampler does not take the node's MODEL"
common=(--models-dir "$T/models" --cache "$T/cache.db" --set checkpoint=tiny.safetensors --set steps=2
        --set width=64 --set height=64)

run 3 run mcd.xml "${common[@]}" --set mcd.dtype=fp8 --output-dir "$T/x"
check "unknown dtype: one line" test "$(wc -l <"$T/err")" = 1
check "unknown dtype: names node and input" \
    grep -q "node 'mcd' input 'dtype': 'fp8' is not one of: default fp32 fp16 bf16" "$T/err"
check "unknown dtype: nothing written" test ! -e "$T/x"

# Two samplers in a row on zeroed conditionings, each with its own ModelComputeDtype, saving the
# latent: the text encoders' and the VAE's precision play no part.
cat >chain.xml <<'XML'
<workflow version="1">
  <param name="d1" type="ENUM" default="default">first sampler's model precision</param>
  <param name="d2" type="ENUM" default="default">second sampler's model precision</param>
  <param name="prefix" type="STRING" default="chain">latent file prefix</param>
  <node id="ckpt" type="CheckpointLoaderSimple"><input name="ckpt_name">tiny.safetensors</input></node>
  <node id="text" type="CLIPTextEncode"><input name="clip" from="ckpt" output="CLIP"/><input name="text">a cat</input></node>
  <node id="zero" type="ConditioningZeroOut"><input name="conditioning" from="text" output="CONDITIONING"/></node>
  <node id="m1" type="ModelComputeDtype"><input name="model" from="ckpt" output="MODEL"/><input name="dtype" param="d1"/></node>
  <node id="m2" type="ModelComputeDtype"><input name="model" from="ckpt" output="MODEL"/><input name="dtype" param="d2"/></node>
  <node id="empty" type="EmptyLatentImage"><input name="width">64</input><input name="height">64</input></node>
  <node id="s1" type="KSampler">
    <input name="model" from="m1" output="MODEL"/><input name="seed">3</input><input name="steps">2</input>
    <input name="positive" from="zero" output="CONDITIONING"/><input name="negative" from="zero" output="CONDITIONING"/>
    <input name="latent_image" from="empty" output="LATENT"/>
  </node>
  <node id="s2" type="KSampler">
    <input name="model" from="m2" output="MODEL"/><input name="seed">4</input><input name="steps">2</input>
    <input name="positive" from="zero" output="CONDITIONING"/><input name="negative" from="zero" output="CONDITIONING"/>
    <input name="latent_image" from="s1" output="LATENT"/><input name="denoise">0.6</input>
  </node>
  <node id="save" type="SaveLatent"><input name="samples" from="s2" output="LATENT"/><input name="filename_prefix" param="prefix"/></node>
</workflow>
XML

run_bf16_or_skip model_compute_dtype.sh run mcd.xml "${common[@]}" --precision bf16 --output-dir "$T/b"

run 0 run mcd.xml "${common[@]}" --output-dir "$T/f"
F=$T/f/txt2img_00001_.png
run 0 run mcd.xml "${common[@]}" --set dtype=bf16 --output-dir "$T/m"
M=$T/m/txt2img_00001_.png
check "bf16 model in an fp32 run: the sampler computes again" grep -q "^  ran .* sampler (KSampler)$" "$T/err"
check "bf16 model in an fp32 run: the prompts come from the fp32 cache" \
    bash -c '! grep -q "^  ran .* positive (" "$0"' "$T/err"
check "bf16 model in an fp32 run: another image than fp32" bash -c '! cmp -s "$0" "$1"' "$M" "$F"
run 0 replay "$M" --extract m.xml
check "bf16 model in an fp32 run: the graph records the dtype" grep -q 'name="dtype" type="ENUM" default="bf16"' m.xml
check "bf16 model in an fp32 run: no run-level precision in the provenance" \
    bash -c '! grep -aq "\"precision\"" "$0"' "$M"
run 0 run mcd.xml "${common[@]}" --set dtype=bf16 --output-dir "$T/m2"
check "bf16 model re-run: from the cache" grep -q "sdflow: done: 1 ran, 1 from cache" "$T/err"
run 0 replay "$M" --models-dir "$T/models"
check "bf16 model in an fp32 run replays identically" grep -q "identical" "$T/out"
SDFLOW_PRECISION=bf16 run 0 replay "$M" --models-dir "$T/models"
check "... whatever the replaying process's precision" grep -q "identical" "$T/out"
run 0 run mcd.xml "${common[@]}" --precision bf16 --set dtype=fp32 --output-dir "$T/bf"
check "fp32 model in a bf16 run: another image than bf16" \
    bash -c '! cmp -s "$0" "$1"' "$T/bf/txt2img_00001_.png" "$T/b/txt2img_00001_.png"
run 0 replay "$T/bf/txt2img_00001_.png" --models-dir "$T/models"
check "fp32 model in a bf16 run replays identically" grep -q "identical" "$T/out"

# The latents' data: the file's last 1024 bytes (1 x 4 x 8 x 8 float32) before its empty version
# tensor; the headers differ by the recorded workflow.
latent() { tail -c 1024 "$T/$1/chain_00001_.latent"; }
chain() { # DIR ARGS...
    local dir=$1; shift
    run 0 run chain.xml --models-dir "$T/models" --cache "$T/cache.db" --output-dir "$T/$dir" "$@"
    test -s "$T/$dir/chain_00001_.latent" || fail "chain $*: no latent"
}
chain c_ff
chain c_bd --set d1=bf16
chain c_df --precision bf16 --set d2=fp32
chain c_hd --set d1=fp16
chain c_bb --precision bf16
check "bf16 model then default in fp32 = default then fp32 model in bf16 (bit for bit)" \
    cmp -s <(latent c_bd) <(latent c_df)
check "... and differs from fp32 throughout" bash -c '! cmp -s "$0" "$1"' <(latent c_bd) <(latent c_ff)
check "... and from bf16 throughout" bash -c '! cmp -s "$0" "$1"' <(latent c_bd) <(latent c_bb)
check "fp16 computes in fp32" cmp -s <(latent c_hd) <(latent c_ff)

# FLUX (its own forward call): a bf16 transformer in an fp32 run changes the pixels and replays.
mkdir -p "$T/models/diffusion_models" "$T/models/vae" "$T/models/text_encoders"
"$MK" --preset flux-dev-tiny --dtype bf16 "$T/models/diffusion_models/flux.safetensors" >/dev/null &&
    "$MK" --preset flux-dev-tiny --kind vae --seed 7 "$T/models/vae/ae.safetensors" >/dev/null &&
    "$BUILD/sdflow_mktextenc" t5 "$T/models/text_encoders/t5xxl_fp16.safetensors" >/dev/null &&
    "$BUILD/sdflow_mktextenc" clip-l "$T/models/text_encoders/clip_l.safetensors" >/dev/null || fail "FLUX files"
awk '/<node id="sampler"/ {print "  <node id=\"mcd\" type=\"ModelComputeDtype\"><input name=\"model\" from=\"shift\"" \
                           " output=\"MODEL\"/><input name=\"dtype\">bf16</input></node>"; s=1}
     s && /from="shift" output="MODEL"/ {sub(/from="shift"/, "from=\"mcd\""); s=0} {print}' \
    "$SRC/graphs/flux-dev.xml" >flux_mcd.xml
flux=(--models-dir "$T/models" --cache "$T/cache.db" --set unet=flux.safetensors --set steps=2 --set width=64
      --set height=64)
run 0 run "$SRC/graphs/flux-dev.xml" "${flux[@]}" --output-dir "$T/xf"
run 0 run flux_mcd.xml "${flux[@]}" --output-dir "$T/xb"
check "FLUX: the bf16 transformer's pixels differ from fp32" \
    bash -c '! cmp -s "$1" "$2"' _ <(idat "$T/xf/flux-dev_00001_.png") <(idat "$T/xb/flux-dev_00001_.png")
run 0 replay "$T/xb/flux-dev_00001_.png" --models-dir "$T/models"
check "FLUX: the bf16 transformer's image replays identically" grep -q "identical" "$T/out"

# ComfyUI's formats: API and UI.
cat >api.json <<'EOJ'
{"4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
 "20": {"class_type": "ModelComputeDtype", "inputs": {"dtype": "bf16", "model": ["4", 0]}},
 "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a photograph of an astronaut riding a horse", "clip": ["4", 1]}},
 "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry, low quality", "clip": ["4", 1]}},
 "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
 "3": {"class_type": "KSampler", "inputs": {"seed": 0, "steps": 2, "cfg": 8, "sampler_name": "euler",
       "scheduler": "normal", "denoise": 1, "model": ["20", 0], "positive": ["6", 0], "negative": ["7", 0],
       "latent_image": ["5", 0]}},
 "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
 "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "api", "images": ["8", 0]}}}
EOJ
run 0 import comfy api.json -o api.xml
check "API import keeps the dtype" grep -q '<input name="dtype">bf16</input>' api.xml
run 0 run api.xml --models-dir "$T/models" --cache "$T/cache.db" --output-dir "$T/a"
check "the API workflow's image is the bf16 model's" cmp -s <(idat "$T/a/api_00001_.png") <(idat "$M")

cat >ui.json <<'EOJ'
{"last_node_id": 3, "last_link_id": 2, "version": 0.4,
 "nodes": [
  {"id": 1, "type": "CheckpointLoaderSimple", "inputs": [], "mode": 0,
   "outputs": [{"name": "MODEL", "type": "MODEL", "links": [1]}, {"name": "CLIP", "type": "CLIP", "links": null},
               {"name": "VAE", "type": "VAE", "links": null}], "widgets_values": ["tiny.safetensors"]},
  {"id": 2, "type": "ModelComputeDtype", "mode": 0, "inputs": [{"name": "model", "type": "MODEL", "link": 1}],
   "outputs": [{"name": "MODEL", "type": "MODEL", "links": []}], "widgets_values": ["bf16"]}],
 "links": [[1, 1, 0, 2, 0, "MODEL"]]}
EOJ
run 0 import comfy ui.json -o ui.xml
check "UI import: the node and its dtype" \
    bash -c 'grep -q "type=\"ModelComputeDtype\"" "$0" && grep -q "<input name=\"dtype\">bf16</input>" "$0"' ui.xml

# Lua: g:add("ModelComputeDtype", ...).
cat >mcd.lua <<'EOL'
local sdflow = require "sdflow"
local g <close> = sdflow.graph()
local ckpt = g:add("CheckpointLoaderSimple", {ckpt_name = "tiny.safetensors"})
local model = g:add("ModelComputeDtype", {model = ckpt.MODEL, dtype = "bf16"})
local pos = g:add("CLIPTextEncode", {clip = ckpt.CLIP, text = "a photograph of an astronaut riding a horse"})
local neg = g:add("CLIPTextEncode", {clip = ckpt.CLIP, text = "blurry, low quality"})
local lat = g:add("EmptyLatentImage", {width = 64, height = 64, batch_size = 1})
local s = g:add("KSampler", {model = model.MODEL, seed = 0, steps = 2, cfg = 8.0, sampler_name = "euler",
                             scheduler = "normal", positive = pos.CONDITIONING, negative = neg.CONDITIONING,
                             latent_image = lat.LATENT, denoise = 1.0})
local dec = g:add("VAEDecode", {samples = s.LATENT, vae = ckpt.VAE})
g:add("SaveImage", {images = dec.IMAGE, filename_prefix = "lua"})
local r, err = g:run{}
if not r then io.stderr:write(err, "\n") os.exit(3) end
EOL
run 0 lua --models-dir "$T/models" --cache "$T/cache.db" --output-dir "$T/l" mcd.lua
check "Lua: the image is the bf16 model's" cmp -s <(idat "$T/l/lua_00001_.png") <(idat "$M")
finish model_compute_dtype.sh
