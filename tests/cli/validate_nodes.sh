#!/bin/bash
# Node-specific problems (the descriptors' check hooks, and text XML cannot carry) are reported by
# `sdflow validate` and by `sdflow run` before any node runs: a size that is not a multiple of 8,
# Canny thresholds out of order, a checkpoint without the VAE that VAEDecode takes, a prompt with
# a control byte, a PyTorch pickle checkpoint. Nothing is written.
. "$(dirname "$0")/lib.bash"
cd "$T" || exit 1
mkdir -p models/checkpoints models/loras input
cp "$SRC/examples/input/shapes.png" input/
"$MK" --preset tiny models/checkpoints/v1-5-pruned-emaonly.safetensors >/dev/null || fail "sdflow_mkckpt"
"$MK" --preset tiny --no-vae models/checkpoints/novae.safetensors >/dev/null || fail "sdflow_mkckpt --no-vae"
printf 'PK\003\004\024\000\000\010\000\000archive/data.pkl' >models/checkpoints/model.ckpt
printf '\200\002\212\012l\374\234F\371 j\250P\031.\200\002M\351\003.' >models/loras/style.pt
TXT=$SRC/graphs/txt2img.xml
COMMON=(--models-dir models --input-dir input --output-dir images)

# both EXPECTED_LINE ARGS...: `validate ARGS` and `run ARGS` exit 3 and print EXPECTED_LINE and
# the summary on stderr; the run runs no node and writes nothing.
both() {
    local want=$1; shift
    local graph=${*: -1}
    for cmd in validate run; do
        run 3 "$cmd" "${COMMON[@]}" "$@"
        printf '%s\nsdflow: error: 1 problem in %s\n' "$want" "$graph" | diff -u - "$T/err" ||
            fail "$cmd $*: stderr"
        grep -q "running\|cached" "$T/err" && fail "$cmd $*: a node ran"
        [ -e images ] && fail "$cmd $*: wrote images/" && rm -rf images
    done
}

both "$TXT:34: node 'latent' input 'width': parameter 'width': 100 is not a multiple of 8" \
    --set width=100 "$TXT"
both "$TXT:35: node 'latent' input 'height': parameter 'height': 68 is not a multiple of 8" \
    --set height=68 --set steps=1 "$TXT"
both "$SRC/graphs/canny-edges.xml:26: node 'edges' input 'low_threshold': parameter 'low_threshold': 0.9 is above high_threshold 0.8" \
    --set low_threshold=0.9 "$SRC/graphs/canny-edges.xml"
both "$TXT:52: node 'decode' input 'vae': the checkpoint has no VAE (no first_stage_model.* tensors); load one with VAELoader" \
    --set checkpoint=novae.safetensors "$TXT"
both "$TXT:10: parameter 'prompt': text contains U+0001, which XML cannot carry, so the workflow could not be saved or written into a PNG" \
    --set prompt="$(printf 'a\001b')" "$TXT"
# A pickle checkpoint (.ckpt is a zip archive since torch 1.6) is named as such, exit 3 (it used to
# be "header length ... exceeds the limit", exit 4).
both "$TXT:23: node 'ckpt' input 'ckpt_name': parameter 'checkpoint': $T/models/checkpoints/model.ckpt: a PyTorch pickle checkpoint (zip archive), not safetensors: pickle checkpoints are not supported yet; convert it to .safetensors" \
    --set checkpoint=model.ckpt "$TXT"

# A checkpoint without VAE is fine when nothing takes its VAE.
cat >novae.xml <<'EOF'
<workflow version="1">
  <node id="ckpt" type="CheckpointLoaderSimple"><input name="ckpt_name">novae.safetensors</input></node>
  <node id="pos" type="CLIPTextEncode">
    <input name="clip" from="ckpt" output="CLIP"/>
    <input name="text">a</input>
  </node>
</workflow>
EOF
run 0 validate "${COMMON[@]}" novae.xml

LORA=$SRC/graphs/txt2img-lora.xml
both "$LORA:31: node 'lora' input 'lora_name': parameter 'lora': $T/models/loras/style.pt: a PyTorch pickle checkpoint (raw pickle), not safetensors: pickle checkpoints are not supported yet; convert it to .safetensors" \
    --set lora=style.pt "$LORA"
# A loader without a check hook meets a pickle (ESRGAN's .pth) when it runs: one line, exit 3.
mkdir -p models/upscale_models
cp models/checkpoints/model.ckpt models/upscale_models/RealESRGAN_x4plus.pth
run 3 run "${COMMON[@]}" --set model=RealESRGAN_x4plus.pth "$SRC/graphs/upscale-esrgan.xml"
grep -q "^sdflow: error: node 'model' (UpscaleModelLoader): .*/models/upscale_models/RealESRGAN_x4plus.pth: a PyTorch pickle checkpoint (zip archive), not safetensors: pickle checkpoints are not supported yet; convert it to .safetensors$" "$T/err" ||
    { cat "$T/err"; fail "pickle upscale model"; }
grep -q "exceeds the limit" "$T/err" && fail "pickle reported as a header length"

finish validate_nodes
