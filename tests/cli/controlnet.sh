#!/bin/bash
# graphs/controlnet-canny.xml end to end on tiny random files (a checkpoint and a ControlNet in
# diffusers' layout): it writes a PNG, a re-run comes from the cache without opening the ControlNet,
# a new strength samples again; a ComfyUI API-format ControlNet workflow imports and runs; an SDXL ControlNet and a checkpoint given as a ControlNet
# fail with their exact message and exit code 3 and write nothing. graphs/controlnet-scribble.xml
# (ScribblePreprocessor + ImageInvert on examples/input/scribble.png) writes a PNG, and an
# API-format workflow with comfyui_controlnet_aux's Scribble_XDoG_Preprocessor imports and runs;
# graphs/controlnet-pose.xml (OpenposePreprocessor with the tiny body, hand and face networks) and
# graphs/controlnet-depth.xml (DepthAnythingV2Preprocessor with a tiny .pth) write a PNG. A
# preprocessor's file of another network (HED's, BAE's scannet.pt) is refused before anything runs.
. "$(dirname "$0")/lib.bash"
mkdir -p "$T/models/checkpoints" "$T/models/controlnet"
"$MK" --preset tiny "$T/models/checkpoints/tiny.safetensors" >/dev/null || { echo "FAIL: mkckpt"; exit 1; }
"$MK" --preset tiny --kind controlnet-diffusers "$T/models/controlnet/canny.safetensors" >/dev/null ||
    { echo "FAIL: mkckpt controlnet"; exit 1; }
"$MK" --preset sdxl-tiny --kind controlnet "$T/models/controlnet/xl.safetensors" >/dev/null ||
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

# A ComfyUI API-format ControlNet workflow imports one to one and runs.
cat >"$T/cn_api.json" <<'JSON'
{"3": {"class_type": "KSampler", "inputs": {"seed": 3, "steps": 2, "cfg": 7.0, "sampler_name": "euler",
  "scheduler": "normal", "denoise": 1.0, "model": ["4", 0], "positive": ["12", 0], "negative": ["12", 1],
  "latent_image": ["5", 0]}},
 "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny.safetensors"}},
 "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
 "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a house", "clip": ["4", 1]}},
 "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
 "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
 "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "comfy_cn", "images": ["8", 0]}},
 "10": {"class_type": "LoadImage", "inputs": {"image": "shapes.png"}},
 "11": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "canny.safetensors"}},
 "12": {"class_type": "ControlNetApplyAdvanced", "inputs": {"strength": 0.8, "start_percent": 0.0,
  "end_percent": 0.9, "positive": ["6", 0], "negative": ["7", 0], "control_net": ["11", 0], "image": ["13", 0]}},
 "13": {"class_type": "Canny", "inputs": {"low_threshold": 0.3, "high_threshold": 0.7, "image": ["10", 0]}}}
JSON
run 0 import comfy "$T/cn_api.json" -o "$T/cn_api.xml"
run 0 run "$T/cn_api.xml" --models-dir "$T/models" --input-dir "$SRC/examples/input" --output-dir "$T/o" --cache "$T/cache.db"
check "imported ComfyUI ControlNet workflow writes one PNG" test "$(cat "$T/out")" = "$T/o/comfy_cn_00001_.png"

"$MK" --preset tiny --kind controlnet "$T/models/controlnet/scribble.safetensors" >/dev/null ||
    { echo "FAIL: mkckpt scribble controlnet"; exit 1; }
run 0 run "$SRC/graphs/controlnet-scribble.xml" "${common[@]}" --set controlnet=scribble.safetensors --set resolution=64
check "controlnet-scribble writes one PNG" test "$(cat "$T/out")" = "$T/o/controlnet-scribble_00001_.png"
check "controlnet-scribble: the preprocessor and the inversion ran" grep -q "hint (ImageInvert): done" "$T/err"
sed -e 's/"Canny", "inputs": {"low_threshold": 0.3, "high_threshold": 0.7,/"Scribble_XDoG_Preprocessor", "inputs": {"threshold": 32, "resolution": 64,/' \
    -e 's/comfy_cn/comfy_xdog/' "$T/cn_api.json" >"$T/xdog_api.json"
run 0 import comfy "$T/xdog_api.json" -o "$T/xdog_api.xml"
run 0 run "$T/xdog_api.xml" --models-dir "$T/models" --input-dir "$SRC/examples/input" --output-dir "$T/o" --cache "$T/cache.db"
check "imported workflow with Scribble_XDoG_Preprocessor writes one PNG" test "$(cat "$T/out")" = "$T/o/comfy_xdog_00001_.png"

# A preprocessor's network file of the wrong kind is refused before anything runs (exit 3).
mkdir -p "$T/models/annotators"
cp "$SRC/tests/data/goldens/lineart_tiny.safetensors" "$T/models/annotators/ControlNetHED.safetensors"
cat >"$T/hed.xml" <<'XML'
<workflow version="1">
  <node id="load" type="LoadImage"><input name="image">shapes.png</input></node>
  <node id="hed" type="HEDPreprocessor"><input name="image" from="load" output="IMAGE"/></node>
  <node id="save" type="SaveImage"><input name="images" from="hed" output="IMAGE"/></node>
</workflow>
XML
before=$(ls "$T/o" | wc -l)
run 3 run "$T/hed.xml" --models-dir "$T/models" --input-dir "$SRC/examples/input" --output-dir "$T/o" --cache "$T/cache.db"
check "a line art file is no HED network" grep -qx ".*hed.xml:3: node 'hed' input 'ckpt_name': $T/models/annotators/ControlNetHED.safetensors: not a HED network: tensor 'norm' is missing" "$T/err"
check "nothing ran" bash -c '! grep -q "load (LoadImage): running" "$0"' "$T/err"
cp "$SRC/tests/data/goldens/hed_tiny.safetensors" "$T/models/annotators/scannet.pt"
sed -e 's/HEDPreprocessor/BAE-NormalMapPreprocessor/' "$T/hed.xml" >"$T/bae.xml"
run 3 run "$T/bae.xml" --models-dir "$T/models" --input-dir "$SRC/examples/input" --output-dir "$T/o" --cache "$T/cache.db"
check "a HED file is no BAE network" grep -qx ".*bae.xml:3: node 'hed' input 'ckpt_name': $T/models/annotators/scannet.pt: not a BAE normal network: tensor 'encoder.original_model.conv_stem.weight' is missing" "$T/err"

run 3 run "$SRC/graphs/controlnet-canny.xml" "${common[@]}" --set controlnet=xl.safetensors
check "an SDXL ControlNet on an SD1 conditioning is named, before anything runs" grep -qx ".*controlnet-canny.xml:[0-9]*: node 'apply' input 'control_net': the ControlNet is SDXL; the conditioning on 'positive' was made by SD1.x text encoders" "$T/err"
run 3 run "$SRC/graphs/controlnet-canny.xml" "${common[@]}" --set controlnet="$T/models/checkpoints/tiny.safetensors" --allow-absolute-paths
check "a checkpoint is no ControlNet" grep -qx ".*controlnet-canny.xml:[0-9]*: node 'cnet' input 'control_net_name': parameter 'controlnet': $T/models/checkpoints/tiny.safetensors: SD1.x file detected, not a ControlNet" "$T/err"
check "failed runs wrote nothing" test "$(ls "$T/o" | wc -l)" = "$before"

# graphs/controlnet-pose.xml with the tiny OpenPose body, hand and face networks (.safetensors named as the .pth).
cp "$SRC/tests/data/goldens/pose_body.safetensors" "$T/models/annotators/body_pose_model.pth"
cp "$SRC/tests/data/goldens/pose_hand.safetensors" "$T/models/annotators/hand_pose_model.pth"
cp "$SRC/tests/data/goldens/pose_face.pth" "$T/models/annotators/facenet.pth"
run 0 run "$SRC/graphs/controlnet-pose.xml" "${common[@]}" --set controlnet=scribble.safetensors --set image=shapes.png --set faces=disable \
    --set resolution=192
check "controlnet-pose writes one PNG" test "$(cat "$T/out")" = "$T/o/controlnet-pose_00001_.png"
check "controlnet-pose: the pose preprocessor ran" grep -q "hint (OpenposePreprocessor): done" "$T/err"

# graphs/controlnet-depth.xml with the tiny Depth Anything V2 network (a .pth in the real layout);
# a file that is not the network is refused before anything runs.
cp "$SRC/tests/data/goldens/depth_tiny.pth" "$T/models/annotators/depth_anything_v2_vits.pth"
run 0 run "$SRC/graphs/controlnet-depth.xml" "${common[@]}" --set controlnet=scribble.safetensors --set image=shapes.png \
    --set resolution=64
check "controlnet-depth writes one PNG" test "$(cat "$T/out")" = "$T/o/controlnet-depth_00001_.png"
check "controlnet-depth: the depth preprocessor ran" grep -q "hint (DepthAnythingV2Preprocessor): done" "$T/err"
run 3 run "$SRC/graphs/controlnet-depth.xml" "${common[@]}" --set controlnet=scribble.safetensors --set image=shapes.png \
    --set depth_model=body_pose_model.pth
check "an OpenPose file is no Depth Anything network" grep -qx ".*controlnet-depth.xml:[0-9]*: node 'hint' input 'ckpt_name': parameter 'depth_model': $T/models/annotators/body_pose_model.pth: not a Depth Anything V2 network: tensor 'pretrained.patch_embed.proj.weight' is missing" "$T/err"

[ $fails = 0 ] && echo "controlnet.sh: all passed"
exit $((fails > 0))
