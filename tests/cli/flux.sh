#!/bin/bash
# FLUX end to end on the tiny files (sdflow_mkckpt --preset flux-dev-tiny; the goldens' GGUF
# files): --inspect shows the architecture; FLUX's 16-channel VAE (ae.safetensors layout) encodes
# and decodes through VAEEncode / VAEDecode and the tiled nodes; bad input is one line with exit 3
# and nothing written: a FLUX checkpoint in the SDXL graph, an SD1 LoRA on a FLUX model, an SD VAE
# on a FLUX latent, a GGUF transformer with a tensor of the wrong shape (before anything runs).
. "$(dirname "$0")/lib.bash"
mkdir -p "$T/models/checkpoints" "$T/models/vae" "$T/models/loras" "$T/models/unet" "$T/in"
cp "$SRC/examples/input/shapes.png" "$T/in/"
"$MK" --preset flux-dev-tiny --dtype bf16 "$T/models/checkpoints/flux.safetensors" >/dev/null &&
    "$MK" --preset flux-dev-tiny --kind vae --seed 7 "$T/models/vae/ae.safetensors" >/dev/null &&
    "$MK" --preset tiny --kind vae "$T/models/vae/sd.safetensors" >/dev/null &&
    "$MK" --preset tiny "$T/sd1.safetensors" >/dev/null &&
    "$BUILD/sdflow_mklora" "$T/sd1.safetensors" "$T/models/loras/sd1.safetensors" &&
    "$BUILD/sdflow_mklora" --peft "$T/models/checkpoints/flux.safetensors" "$T/models/loras/flux.safetensors" &&
    mkdir -p "$T/models/text_encoders" && "$BUILD/sdflow_mktextenc" t5 "$T/models/text_encoders/t5xxl_fp16.safetensors" >/dev/null &&
    "$BUILD/sdflow_mktextenc" clip-l "$T/models/text_encoders/clip_l.safetensors" >/dev/null ||
    { echo "FAIL: mkckpt"; exit 1; }
cp "$SRC/tests/data/goldens/flux_bad_shape.gguf" "$SRC/tests/data/goldens/flux_schnell_tiny.gguf" "$T/models/unet/"

check "--inspect shows the FLUX dev transformer" bash -c \
    '"$0" --inspect "$1" | grep -qx family=FLUX && "$0" --inspect "$1" | grep -qx flux.guidance=1' \
    "$MK" "$T/models/checkpoints/flux.safetensors"

# The 16-channel VAE: image -> latent -> image, plain and tiled.
cat >"$T/vae.xml" <<'EOX'
<workflow version="1">
  <node id="load" type="LoadImage"><input name="image">shapes.png</input></node>
  <node id="vae" type="VAELoader"><input name="vae_name">ae.safetensors</input></node>
  <node id="enc" type="VAEEncode"><input name="pixels" from="load" output="IMAGE"/><input name="vae" from="vae" output="VAE"/></node>
  <node id="dec" type="VAEDecode"><input name="samples" from="enc" output="LATENT"/><input name="vae" from="vae" output="VAE"/></node>
  <node id="tenc" type="VAEEncodeTiled"><input name="pixels" from="load" output="IMAGE"/><input name="vae" from="vae" output="VAE"/><input name="tile_size">64</input><input name="overlap">16</input></node>
  <node id="tdec" type="VAEDecodeTiled"><input name="samples" from="tenc" output="LATENT"/><input name="vae" from="vae" output="VAE"/><input name="tile_size">64</input><input name="overlap">16</input></node>
  <node id="save" type="SaveImage"><input name="images" from="dec" output="IMAGE"/><input name="filename_prefix">ae</input></node>
  <node id="tsave" type="SaveImage"><input name="images" from="tdec" output="IMAGE"/><input name="filename_prefix">aet</input></node>
</workflow>
EOX
run 0 run "$T/vae.xml" --models-dir "$T/models" --input-dir "$T/in" --output-dir "$T/o" --no-cache
check "the 16-channel VAE round trip writes its PNGs" test -s "$T/o/ae_00001_.png" -a -s "$T/o/aet_00001_.png"

# An SD VAE cannot decode a FLUX latent: named before anything runs.
sed -e 's/ae.safetensors/sd.safetensors/' -e 's/<node id="enc" type="VAEEncode">.*//' \
    -e 's#<node id="dec" type="VAEDecode"><input name="samples" from="enc"#<node id="e16" type="EmptySD3LatentImage"><input name="width">64</input><input name="height">64</input></node><node id="dec" type="VAEDecode"><input name="samples" from="e16"#' \
    -e '/tenc\|tdec\|tsave/d' "$T/vae.xml" >"$T/vae_sd.xml"
run 3 run "$T/vae_sd.xml" --models-dir "$T/models" --input-dir "$T/in" --output-dir "$T/o2" --no-cache
check "an SD VAE on a 16-channel latent is named" grep -q "a 16-channel latent cannot be decoded by a 4-channel VAE" "$T/err"
check "nothing written" test ! -e "$T/o2"

run 3 run "$SRC/graphs/sdxl.xml" --models-dir "$T/models" --output-dir "$T/o3" --no-cache --set checkpoint=flux.safetensors
# (the message depends on whether the text-encoder loaders read the file's missing encoders)
check "a FLUX checkpoint in the SDXL graph names FLUX" grep -q "node 'positive' .*FLUX" "$T/err"
check "nothing written" test ! -e "$T/o3"

run 3 run "$SRC/graphs/txt2img-lora.xml" --models-dir "$T/models" --output-dir "$T/o4" --no-cache \
    --set checkpoint=flux.safetensors --set lora=sd1.safetensors
check "an SD1 LoRA on a FLUX model is named before anything runs" grep -q "SD1.x LoRA detected.*the model is FLUX" "$T/err"
check "nothing ran" bash -c '! grep -q "running" "$0"' "$T/err"

# A FLUX LoRA (diffusers/PEFT keys) on the FLUX model passes the checks; on an SD1 model it is named.
cat >"$T/flux_lora.xml" <<'EOX'
<workflow version="1">
  <param name="checkpoint" type="STRING" default="flux.safetensors">the checkpoint</param>
  <node id="ckpt" type="CheckpointLoaderSimple"><input name="ckpt_name" param="checkpoint"/></node>
  <node id="lora" type="LoraLoaderModelOnly"><input name="model" from="ckpt" output="MODEL"/>
    <input name="lora_name">flux.safetensors</input><input name="strength_model">0.8</input></node>
  <node id="e" type="EmptySD3LatentImage"><input name="width">64</input><input name="height">64</input></node>
  <node id="s" type="KSampler"><input name="model" from="lora" output="MODEL"/>
    <input name="positive" from="c" output="CONDITIONING"/><input name="negative" from="c" output="CONDITIONING"/>
    <input name="latent_image" from="e" output="LATENT"/><input name="cfg">1</input><input name="steps">1</input></node>
  <node id="te" type="DualCLIPLoader"><input name="clip_name1">clip_l.safetensors</input>
    <input name="clip_name2">t5xxl_fp16.safetensors</input><input name="type">flux</input></node>
  <node id="c" type="CLIPTextEncode"><input name="clip" from="te" output="CLIP"/><input name="text">x</input></node>
  <node id="o" type="SaveLatent"><input name="samples" from="s" output="LATENT"/></node>
</workflow>
EOX
run 0 validate --models-dir "$T/models" "$T/flux_lora.xml"
cp "$T/sd1.safetensors" "$T/models/checkpoints/sd1.safetensors"
run 3 validate --models-dir "$T/models" "$T/flux_lora.xml" --set checkpoint=sd1.safetensors
check "a FLUX LoRA on an SD1 model is named" grep -q "FLUX LoRA detected (key 'transformer\..*the model is SD1.x" "$T/err"
# A FLUX checkpoint without text encoders feeding CLIPTextEncode: named before anything runs.
run 3 validate --models-dir "$T/models" "$SRC/graphs/txt2img.xml" --set checkpoint=flux.safetensors
check "a checkpoint without text encoders is named" \
    grep -q "node 'positive' input 'clip': the FLUX checkpoint has no text encoders; load them with CLIPLoader or DualCLIPLoader" "$T/err"

cat >"$T/gguf.xml" <<'EOX'
<workflow version="1">
  <param name="unet" type="STRING" default="flux_schnell_tiny.gguf">the GGUF transformer</param>
  <node id="unet" type="UnetLoaderGGUF"><input name="unet_name" param="unet"/></node>
  <node id="shift" type="ModelSamplingFlux"><input name="model" from="unet" output="MODEL"/></node>
  <node id="e" type="EmptySD3LatentImage"><input name="width">64</input><input name="height">64</input></node>
  <node id="dec" type="VAEDecode"><input name="samples" from="e" output="LATENT"/><input name="vae" from="vae" output="VAE"/></node>
  <node id="vae" type="VAELoader"><input name="vae_name">ae.safetensors</input></node>
  <node id="save" type="SaveImage"><input name="images" from="dec" output="IMAGE"/></node>
</workflow>
EOX
run 0 validate --models-dir "$T/models" "$T/gguf.xml"
run 3 run "$T/gguf.xml" --models-dir "$T/models" --output-dir "$T/o5" --no-cache --set unet=flux_bad_shape.gguf
check "a GGUF tensor of the wrong shape is one line" grep -qx \
    ".*flux_bad_shape.gguf: tensor 'single_blocks.1.linear2.weight' has shape \[320, 64\] (2 dimensions), the FLUX transformer needs \[64, 320\]" "$T/err"
check "nothing ran" bash -c '! grep -q "running" "$0"' "$T/err"
check "nothing written" test ! -e "$T/o5"

finish flux
