#!/bin/bash
# graphs/ipadapter.xml end to end on tiny random files (a checkpoint with 22 attn2 layers, the
# tiny CLIP vision model and IP-Adapters of tests/data/goldens): it writes a PNG; a re-run comes
# from the cache; the plus adapter runs too; two IP-Adapters and a ControlNet stack in one graph;
# IPAdapterUnifiedLoader finds its preset's files by name; an adapter for another family and a
# CLIP vision model of other widths fail before anything runs with their exact message (exit 3).
. "$(dirname "$0")/lib.bash"
G="$SRC/tests/data/goldens"
mkdir -p "$T/models/checkpoints" "$T/models/clip_vision" "$T/models/ipadapter" "$T/models/controlnet"
"$MK" --preset tiny --res-blocks 2 --depth 2 "$T/models/checkpoints/tiny.safetensors" >/dev/null || { echo "FAIL: mkckpt"; exit 1; }
"$MK" --preset sdxl-tiny "$T/models/checkpoints/xl.safetensors" >/dev/null || { echo "FAIL: mkckpt xl"; exit 1; }
"$MK" --preset tiny --res-blocks 2 --depth 2 --kind controlnet "$T/models/controlnet/cn.safetensors" >/dev/null ||
    { echo "FAIL: mkckpt controlnet"; exit 1; }
cp "$G/clip_vision_hf.safetensors" "$T/models/clip_vision/CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
cp "$G/clip_vision_small.safetensors" "$T/models/clip_vision/small.safetensors"
cp "$G/ipa_plain.safetensors" "$T/models/ipadapter/ip-adapter_sd15.safetensors"
cp "$G/ipa_plus.safetensors" "$T/models/ipadapter/ip-adapter-plus_sd15.safetensors"
common=(--models-dir "$T/models" --input-dir "$SRC/examples/input" --output-dir "$T/o" --cache "$T/cache.db"
        --set checkpoint=tiny.safetensors --set steps=2 --set width=64 --set height=64)

run 0 run "$SRC/graphs/ipadapter.xml" "${common[@]}"
check "ipadapter writes one PNG" test "$(cat "$T/out")" = "$T/o/ipadapter_00001_.png"
run 0 run "$SRC/graphs/ipadapter.xml" "${common[@]}"
check "re-run: the sampler's latent comes from the cache" grep -q "sdflow: done: 1 ran, 1 from cache" "$T/err"
run 0 run "$SRC/graphs/ipadapter.xml" "${common[@]}" --set ipadapter=ip-adapter-plus_sd15.safetensors \
    --set weight_type="style transfer" --set embeds_scaling="K+V w/ C penalty" --set end_at=0.5
check "the plus adapter writes a PNG" test "$(cat "$T/out")" = "$T/o/ipadapter_00003_.png"

# Two IP-Adapters (one from the unified loader) and a ControlNet in one graph.
cat >"$T/stack.xml" <<'XML'
<workflow version="1">
  <node id="ckpt" type="CheckpointLoaderSimple"><input name="ckpt_name">tiny.safetensors</input></node>
  <node id="img" type="LoadImage"><input name="image">shapes.png</input></node>
  <node id="uni" type="IPAdapterUnifiedLoader">
    <input name="model" from="ckpt" output="MODEL"/><input name="preset">STANDARD (medium strength)</input>
  </node>
  <node id="ipa1" type="IPAdapter">
    <input name="model" from="uni" output="model"/><input name="ipadapter" from="uni" output="ipadapter"/>
    <input name="image" from="img" output="IMAGE"/><input name="weight">0.7</input>
  </node>
  <node id="plus" type="IPAdapterModelLoader"><input name="ipadapter_file">ip-adapter-plus_sd15.safetensors</input></node>
  <node id="cv" type="CLIPVisionLoader"><input name="clip_name">CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors</input></node>
  <node id="enc" type="IPAdapterEncoder">
    <input name="ipadapter" from="plus" output="IPADAPTER"/><input name="image" from="img" output="IMAGE"/>
    <input name="clip_vision" from="cv" output="CLIP_VISION"/>
  </node>
  <node id="ipa2" type="IPAdapterEmbeds">
    <input name="model" from="ipa1" output="MODEL"/><input name="ipadapter" from="plus" output="IPADAPTER"/>
    <input name="pos_embed" from="enc" output="pos_embed"/><input name="neg_embed" from="enc" output="neg_embed"/>
    <input name="weight">0.5</input><input name="weight_type">ease in</input>
  </node>
  <node id="pos" type="CLIPTextEncode"><input name="clip" from="ckpt" output="CLIP"/><input name="text">a house</input></node>
  <node id="neg" type="CLIPTextEncode"><input name="clip" from="ckpt" output="CLIP"/><input name="text">blurry</input></node>
  <node id="cn" type="ControlNetLoader"><input name="control_net_name">cn.safetensors</input></node>
  <node id="apply" type="ControlNetApplyAdvanced">
    <input name="positive" from="pos" output="CONDITIONING"/><input name="negative" from="neg" output="CONDITIONING"/>
    <input name="control_net" from="cn" output="CONTROL_NET"/><input name="image" from="img" output="IMAGE"/>
    <input name="strength">0.8</input>
  </node>
  <node id="lat" type="EmptyLatentImage"><input name="width">64</input><input name="height">64</input></node>
  <node id="ks" type="KSampler">
    <input name="model" from="ipa2" output="MODEL"/><input name="steps">2</input>
    <input name="positive" from="apply" output="positive"/><input name="negative" from="apply" output="negative"/>
    <input name="latent_image" from="lat" output="LATENT"/>
  </node>
  <node id="dec" type="VAEDecode"><input name="samples" from="ks" output="LATENT"/><input name="vae" from="ckpt" output="VAE"/></node>
  <node id="save" type="SaveImage"><input name="images" from="dec" output="IMAGE"/><input name="filename_prefix">stack</input></node>
</workflow>
XML
run 0 run "$T/stack.xml" --models-dir "$T/models" --input-dir "$SRC/examples/input" --output-dir "$T/o" --cache "$T/cache.db"
check "two IP-Adapters and a ControlNet write one PNG" test "$(cat "$T/out")" = "$T/o/stack_00001_.png"

before=$(ls "$T/o" | wc -l)
run 3 run "$SRC/graphs/ipadapter.xml" "${common[@]}" --set checkpoint=xl.safetensors
check "an SD1.5 IP-Adapter on an SDXL model is named before anything runs" grep -qx ".*ipadapter.xml:[0-9]*: node 'ipadapter' input 'ipadapter': the IP-Adapter is for SD1.x models; the model is SDXL" "$T/err"
run 3 run "$SRC/graphs/ipadapter.xml" "${common[@]}" --set clip_vision=small.safetensors
check "a CLIP vision model of other widths is named before anything runs" grep -qx ".*ipadapter.xml:[0-9]*: node 'ipadapter' input 'clip_vision': the IP-Adapter takes 24-wide CLIP vision image_embeds; this CLIP vision model gives 16 (a different encoder: ViT-H/14 for most IP-Adapters, ViT-bigG/14 for ip-adapter_sdxl)" "$T/err"
check "nothing ran" bash -c '! grep -q "(CheckpointLoaderSimple): running" "$0"' "$T/err"
check "failed runs wrote nothing" test "$(ls "$T/o" | wc -l)" = "$before"

finish ipadapter.sh
