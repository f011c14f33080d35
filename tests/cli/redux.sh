#!/bin/bash
# FLUX Redux end to end on tiny files: graphs/flux-redux.xml (the tiny FLUX dev transformer, T5 and
# CLIP-L, SigLIP and a Redux model from sdflow_mkckpt --kind siglip-tiny / redux-tiny) writes its PNG
# with strength_type multiply and attn_bias (the tensors: tests/nodes/test_redux_nodes.c); bad
# input is one line with exit 3 and nothing written: a CLIP vision model of another width, SD1
# conditioning, a file that is no Redux model.
. "$(dirname "$0")/lib.bash"
G=$SRC/tests/data/goldens
M=$T/models
mkdir -p "$M/unet" "$M/vae" "$M/text_encoders" "$M/clip_vision" "$M/style_models" "$M/checkpoints" "$T/in"
cp "$SRC/examples/input/shapes.png" "$T/in/"
"$MK" --preset flux-dev-tiny "$M/unet/flux1-dev.safetensors" >/dev/null &&
    "$MK" --preset flux-dev-tiny --kind vae "$M/vae/ae.safetensors" >/dev/null &&
    "$MK" --preset tiny "$M/checkpoints/sd1.safetensors" >/dev/null &&
    "$BUILD/sdflow_mktextenc" t5 "$M/text_encoders/t5xxl_fp16.safetensors" >/dev/null &&
    "$BUILD/sdflow_mktextenc" clip-l "$M/text_encoders/clip_l.safetensors" >/dev/null || { echo "FAIL: tiny files"; exit 1; }
"$MK" --kind siglip-tiny "$M/clip_vision/sigclip_vision_patch14_384.safetensors" >/dev/null &&
    "$MK" --preset flux-dev-tiny --kind redux-tiny "$M/style_models/flux1-redux-dev.safetensors" >/dev/null || { echo "FAIL: mkckpt siglip / redux"; exit 1; }
cp "$G/clip_vision_hf.safetensors" "$M/clip_vision/vit.safetensors"
cp "$G/siglip_tiny.safetensors" "$M/style_models/not-redux.safetensors"
common=(--models-dir "$M" --input-dir "$T/in" --no-cache --set width=64 --set height=64 --set steps=2)

run 0 run "$SRC/graphs/flux-redux.xml" "${common[@]}" --output-dir "$T/o1"
check "the stock Redux graph writes its PNG" test -s "$T/o1/flux-redux_00001_.png"
run 0 run "$SRC/graphs/flux-redux.xml" "${common[@]}" --output-dir "$T/o3" --set strength_type=attn_bias \
    --set strength=0.3 --set crop=none
check "attn_bias at strength 0.3 writes its PNG" test -s "$T/o3/flux-redux_00001_.png"

# A CLIP vision model of another width: named before anything runs.
run 3 run "$SRC/graphs/flux-redux.xml" "${common[@]}" --output-dir "$T/o5" --set clip_vision=vit.safetensors
check "a CLIP vision model of another width is one line" grep -qx \
    ".*node 'apply' input 'clip_vision_output': FLUX Redux takes 144-wide SigLIP features; this CLIP vision model gives 32 (encode with sigclip_vision_patch14_384)" "$T/err"
check "nothing written" test ! -e "$T/o5"

# Redux on SD1 conditioning (a non-FLUX model).
sed -e 's#<node id="clip" type="DualCLIPLoader">#<node id="sd1" type="CheckpointLoaderSimple"><input name="ckpt_name">sd1.safetensors</input></node><node id="clipx" type="DualCLIPLoader">#' \
    -e 's#<input name="clip" from="clip" output="CLIP"/>#<input name="clip" from="sd1" output="CLIP"/>#' \
    "$SRC/graphs/flux-redux.xml" >"$T/sd1.xml"
run 3 run "$T/sd1.xml" "${common[@]}" --output-dir "$T/o6"
check "Redux on SD1 conditioning is named" grep -q \
    "node 'apply' input 'conditioning': FLUX Redux's image tokens are for FLUX conditioning; this conditioning is SD1.x" "$T/err"
check "nothing written" test ! -e "$T/o6"

# A style model file that is no Redux model.
run 3 run "$SRC/graphs/flux-redux.xml" "${common[@]}" --output-dir "$T/o7" --set style_model=not-redux.safetensors
check "a file that is no Redux model is one line" grep -q \
    "not-redux.safetensors: not a FLUX Redux model (no 2-D redux_up.weight and redux_down.weight)" "$T/err"
check "nothing written" test ! -e "$T/o7"

finish redux
