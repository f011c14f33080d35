#!/usr/bin/env bash
# Writes the full-shape random model files of the engine comparisons (docs/benchmarks.md) with
# sdflow's own tools, in ComfyUI's folder layout, skipping files that exist:
#
#   bench/make_bench_files.sh BUILD_DIR OUT_DIR [--q8] [--dev] [--no-sdxl]
#
#   OUT_DIR/diffusion_models/flux1-schnell-Q4_0.gguf      6.7 GB  FLUX schnell transformer, GGUF Q4_0
#   OUT_DIR/diffusion_models/flux1-schnell-Q8_0.gguf     12.6 GB  (--q8)
#   OUT_DIR/diffusion_models/flux1-dev-Q4_0.gguf          6.7 GB  (--dev; with --q8 also Q8_0)
#   OUT_DIR/text_encoders/t5-v1_1-xxl-encoder-Q8_0.gguf   5.1 GB  T5-XXL encoder, GGUF Q8_0
#   OUT_DIR/text_encoders/clip_l.safetensors              0.25 GB CLIP-L, f16
#   OUT_DIR/vae/ae.safetensors                            0.17 GB FLUX VAE, f16
#   OUT_DIR/checkpoints/sdxl_f16.safetensors              6.9 GB  SDXL base (UNet, CLIP-L, bigG, VAE), f16
#   OUT_DIR/checkpoints/sd15_f16.safetensors              2.1 GB  SD1.5, f16
#
# Seed 1 everywhere; each file is deterministic. Times on the 2-core VM: about 1 minute per GB.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 BUILD_DIR OUT_DIR [--q8] [--dev] [--no-sdxl]" >&2
    exit 2
fi
build=$1 out=$2
shift 2
q8=0 dev=0 sdxl=1
for a in "$@"; do
    case "$a" in
        --q8) q8=1 ;;
        --dev) dev=1 ;;
        --no-sdxl) sdxl=0 ;;
        *) echo "unknown option $a" >&2; exit 2 ;;
    esac
done
mkdir -p "$out/diffusion_models" "$out/text_encoders" "$out/vae" "$out/checkpoints"

make() { # make FILE COMMAND...: runs COMMAND (which writes FILE) unless FILE exists
    local f=$1
    shift
    if [ -e "$f" ]; then
        echo "have $f"
        return
    fi
    local t0=$SECONDS
    "$@"
    echo "wrote $f ($(du -h "$f" | cut -f1), $((SECONDS - t0)) s)"
}

mk=$build/sdflow_mkckpt te=$build/sdflow_mktextenc
dm=$out/diffusion_models
make "$dm/flux1-schnell-Q4_0.gguf" "$mk" --preset flux-schnell --dtype q4_0 --seed 1 "$dm/flux1-schnell-Q4_0.gguf"
[ $q8 = 0 ] || make "$dm/flux1-schnell-Q8_0.gguf" "$mk" --preset flux-schnell --dtype q8_0 --seed 1 "$dm/flux1-schnell-Q8_0.gguf"
[ $dev = 0 ] || make "$dm/flux1-dev-Q4_0.gguf" "$mk" --preset flux-dev --dtype q4_0 --seed 1 "$dm/flux1-dev-Q4_0.gguf"
[ $dev = 0 ] || [ $q8 = 0 ] || make "$dm/flux1-dev-Q8_0.gguf" "$mk" --preset flux-dev --dtype q8_0 --seed 1 "$dm/flux1-dev-Q8_0.gguf"
make "$out/text_encoders/t5-v1_1-xxl-encoder-Q8_0.gguf" "$te" --full --dtype q8_0 --seed 1 t5 \
    "$out/text_encoders/t5-v1_1-xxl-encoder-Q8_0.gguf"
make "$out/text_encoders/clip_l.safetensors" "$te" --full --dtype f16 --seed 1 clip-l "$out/text_encoders/clip_l.safetensors"
make "$out/vae/ae.safetensors" "$mk" --preset flux-schnell --kind vae --dtype f16 --seed 1 "$out/vae/ae.safetensors"
make "$out/checkpoints/sd15_f16.safetensors" "$mk" --preset sd15 --dtype f16 --seed 1 \
    "$out/checkpoints/sd15_f16.safetensors"
[ $sdxl = 0 ] || make "$out/checkpoints/sdxl_f16.safetensors" "$mk" --preset sdxl --dtype f16 --seed 1 \
    "$out/checkpoints/sdxl_f16.safetensors"
