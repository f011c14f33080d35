#!/bin/bash
# The README's test command is the one .ci/run runs, and the stock graphs validate.
. "$(dirname "$0")/lib.bash"

test_cmd=$(grep -m1 '^sh tools/install-deps.sh && cmake -S . -B build -DSDFLOW_WERROR=ON' "$SRC/README.md")
[ -n "$test_cmd" ] || fail "README has no test command"
grep -qxF "$test_cmd" "$SRC/.ci/run" || fail ".ci/run does not run the README's test command: $test_cmd"
# Stock graphs validate with their default parameters against a models directory holding tiny
# random files under the default names.
mkdir -p "$T/models/checkpoints" "$T/models/vae" "$T/input"
cp "$SRC/examples/input/shapes.png" "$T/input/input.png"
cp "$SRC/examples/input/shapes.png" "$T/input/"
cp "$SRC/examples/input/shapes-inpaint.png" "$T/input/"
cp "$SRC/examples/input/scribble.png" "$T/input/"
cp "$SRC/examples/input/shapes.png" "$T/input/person.png"
cp "$SRC/examples/input/shapes.png" "$T/input/photo.png"
"$MK" --preset tiny "$T/models/checkpoints/v1-5-pruned-emaonly.safetensors" >/dev/null || fail "sdflow_mkckpt"
mkdir -p "$T/models/upscale_models"
"$BUILD/sdflow_mkesrgan" --nf 8 --gc 4 --blocks 1 "$T/models/upscale_models/RealESRGAN_x4plus.safetensors" ||
    fail "sdflow_mkesrgan"
mkdir -p "$T/models/controlnet"
for cn in canny scribble openpose; do
    "$MK" --preset tiny --kind controlnet "$T/models/controlnet/control_v11p_sd15_${cn}_fp16.safetensors" >/dev/null ||
        fail "sdflow_mkckpt --kind controlnet"
done
"$MK" --preset tiny --kind controlnet "$T/models/controlnet/control_v11f1p_sd15_depth_fp16.safetensors" >/dev/null ||
    fail "sdflow_mkckpt --kind controlnet"
mkdir -p "$T/models/annotators"
cp "$SRC/tests/data/goldens/pose_body.safetensors" "$T/models/annotators/body_pose_model.pth"
cp "$SRC/tests/data/goldens/depth_tiny.pth" "$T/models/annotators/depth_anything_v2_vits.pth"
cp "$SRC/tests/data/goldens/pose_hand.safetensors" "$T/models/annotators/hand_pose_model.pth"
cp "$SRC/tests/data/goldens/pose_face.pth" "$T/models/annotators/facenet.pth"
mkdir -p "$T/models/loras"
"$BUILD/sdflow_mklora" "$T/models/checkpoints/v1-5-pruned-emaonly.safetensors" \
    "$T/models/loras/lora.safetensors" || fail "sdflow_mklora"
"$MK" --preset tiny --in-channels 9 "$T/models/checkpoints/sd-v1-5-inpainting.safetensors" >/dev/null ||
    fail "sdflow_mkckpt --in-channels 9"
"$MK" --preset sdxl-tiny --dtype f16 "$T/models/checkpoints/sd_xl_base_1.0.safetensors" >/dev/null ||
    fail "sdflow_mkckpt --preset sdxl-tiny"
"$MK" --preset sdxl-refiner-tiny --dtype f16 "$T/models/checkpoints/sd_xl_refiner_1.0.safetensors" >/dev/null ||
    fail "sdflow_mkckpt --preset sdxl-refiner-tiny"
"$MK" --preset sd2-unclip-tiny --dtype f16 "$T/models/checkpoints/sd21-unclip-h.ckpt" >/dev/null ||
    fail "sdflow_mkckpt --preset sd2-unclip-tiny"
mkdir -p "$T/models/unet" "$T/models/clip"
"$MK" --preset flux-schnell-tiny "$T/models/unet/flux1-schnell.safetensors" >/dev/null &&
    "$MK" --preset flux-dev-tiny "$T/models/unet/flux1-dev.safetensors" >/dev/null &&
    "$MK" --preset flux-dev-tiny --kind vae "$T/models/vae/ae.safetensors" >/dev/null &&
    "$BUILD/sdflow_mktextenc" t5 "$T/models/clip/t5xxl_fp16.safetensors" >/dev/null &&
    "$BUILD/sdflow_mktextenc" clip-l "$T/models/clip/clip_l.safetensors" >/dev/null || fail "FLUX files"
mkdir -p "$T/models/clip_vision" "$T/models/ipadapter"
cp "$SRC/tests/data/goldens/clip_vision_hf.safetensors" "$T/models/clip_vision/CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
cp "$SRC/tests/data/goldens/ipa_plain.safetensors" "$T/models/ipadapter/ip-adapter_sd15.safetensors"
cp "$SRC/tests/data/goldens/clip_vision_proj160.safetensors" "$T/models/clip_vision/clip_vision_g.safetensors"
mkdir -p "$T/models/style_models"
"$MK" --kind siglip-tiny "$T/models/clip_vision/sigclip_vision_patch14_384.safetensors" >/dev/null &&
    "$MK" --preset flux-dev-tiny --kind redux-tiny "$T/models/style_models/flux1-redux-dev.safetensors" >/dev/null ||
    fail "SigLIP and Redux files"
cp "$SRC/tests/data/goldens/ipa_faceid_plusv2.safetensors" "$T/models/ipadapter/ip-adapter-faceid-plusv2_sd15.safetensors"
cp "$SRC/tests/data/goldens/ipa_faceid_lora.safetensors" "$T/models/loras/ip-adapter-faceid-plusv2_sd15_lora.safetensors"
cp "$SRC/tests/data/goldens/faceid_embeds.safetensors" "$T/input/face.safetensors"
mkdir -p "$T/models/insightface/models/buffalo_l"
cp "$SRC"/tests/data/insightface/tiny_pack/*.onnx "$T/models/insightface/models/buffalo_l/"
cp "$SRC/examples/input/shapes.png" "$T/input/face.png"
for g in "$SRC"/graphs/*.xml; do
    "$BIN" validate --models-dir "$T/models" --input-dir "$T/input" "$g" >"$T/out" 2>&1 ||
        { cat "$T/out"; fail "stock graph $g does not validate"; }
done
# The quick-start run command, after its install and build steps, works as written (run from a
# scratch directory, with this build's binaries).
run_cmd=$(grep -m1 '^sh tools/install-deps.sh && cmake -S . -B build && cmake --build build -j2 && ' "$SRC/README.md")
[ -n "$run_cmd" ] || fail "README has no run command"
tail_cmd=${run_cmd#sh tools/install-deps.sh && cmake -S . -B build && cmake --build build -j2 && }
mkdir -p "$T/quick/build" "$T/quick/graphs"
ln -s "$BIN" "$T/quick/build/sdflow"
ln -s "$MK" "$T/quick/build/sdflow_mkckpt"
cp "$SRC"/graphs/*.xml "$T/quick/graphs/"
(cd "$T/quick" && bash -c "$tail_cmd" >"$T/quick.log" 2>&1) || { tail -5 "$T/quick.log"; fail "quick-start command"; }
[ -s "$T/quick/output/txt2img_00001_.png" ] || fail "quick start wrote no output/txt2img_00001_.png"

echo "readme: $((fails == 0 ? 1 : 0)) passed, $fails failed"
[ "$fails" = 0 ]
