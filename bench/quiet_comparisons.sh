#!/usr/bin/env bash
# The engine comparisons of docs/benchmarks.md, for a quiet machine, in one run: sdflow against
# stable-diffusion.cpp (issue 9 part 6, issue 16 part 3) and PyTorch (issue 15 part 5), same
# files, sizes, steps, sampler (euler), seed and threads. Prints each figure, the ratios and
# peak RSS, and a table at the end; raw outputs go to the log folder.
#
#   bench/quiet_comparisons.sh [options]
#     --build DIR        sdflow build folder (default build)
#     --sdcpp BIN        stable-diffusion.cpp's sd-cli (default /work/sdcpp/build/bin/sd-cli;
#                        bench/build_sdcpp.sh builds it)
#     --files DIR        model files (default /work/bench-files; bench/make_bench_files.sh writes them)
#     --log DIR          raw outputs (default /tmp/quiet-comparisons)
#     --threads N        threads of every engine (default 2)
#     --sdxl-size N      SDXL image side (default 1024)
#     --flux-size N      FLUX image side (default 512)
#     --q8               also FLUX on the Q8_0 transformer (the file must exist: make_bench_files.sh --q8)
#     --skip-sd15        skip the SD1.5 512x512 rows (sdflow fp32, bf16, PyTorch fp32, bf16)
#     --skip-sdxl        skip SDXL
#     --skip-flux        skip FLUX
#     --skip-sdcpp       sdflow (and PyTorch) only
#     --txt2img          also the whole FLUX schnell txt2img through sdflow (4 steps at --flux-size,
#                        Q4_0 transformer, Q8_0 T5) for its peak RSS (issue 16's <= 10 GB; 10-20 min)
#     --dry-run          print the commands only
#
# Every engine runs once per row (one step; sdflow's bench_unet one untimed forward first, for
# the weight upload and kernel builds, then one timed). The sd.cpp figure is its own "sampling
# completed, taking X s" with --eager-load (sd.cpp otherwise loads the diffusion model's weights
# lazily, inside that time): the sampling alone, loading, text encoders and the VAE decode
# apart; sdflow's are bench_unet's / bench_flux's forward times after the upload.
set -uo pipefail

build=build sdcpp=/work/sdcpp/build/bin/sd-cli files=/work/bench-files log=/tmp/quiet-comparisons
threads=2 sdxl_size=1024 flux_size=512 q8=0 sd15=1 sdxl=1 flux=1 use_sdcpp=1 dry=0 txt2img=0
while [ $# -gt 0 ]; do
    case "$1" in
        --build) build=$2; shift ;;
        --sdcpp) sdcpp=$2; shift ;;
        --files) files=$2; shift ;;
        --log) log=$2; shift ;;
        --threads) threads=$2; shift ;;
        --sdxl-size) sdxl_size=$2; shift ;;
        --flux-size) flux_size=$2; shift ;;
        --q8) q8=1 ;;
        --skip-sd15) sd15=0 ;;
        --skip-sdxl) sdxl=0 ;;
        --skip-flux) flux=0 ;;
        --skip-sdcpp) use_sdcpp=0 ;;
        --txt2img) txt2img=1 ;;
        --dry-run) dry=1 ;;
        -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
        *) echo "quiet_comparisons: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$log"
export POCL_MAX_PTHREAD_COUNT=$threads OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=passive
rows=()   # "label|seconds|peak RSS KiB"
ratios=() # "what: value"
start=$SECONDS

# run NAME CMD...: runs CMD under /usr/bin/time, output in $log/NAME.log; sets rss (KiB) and wall.
run() {
    local name=$1
    shift
    echo "== $name: $*"
    if [ $dry = 1 ]; then
        rss=0 wall=0
        return 1 # nothing to parse
    fi
    local t0=$SECONDS
    /usr/bin/time -f 'TIME %M %e %U' -o "$log/$name.time" "$@" > "$log/$name.log" 2>&1
    local rc=$?
    read -r _ rss wall _ < <(grep '^TIME' "$log/$name.time")
    echo "   exit $rc, $((SECONDS - t0)) s wall, peak RSS $((rss / 1024)) MiB"
    [ $rc = 0 ] || tail -5 "$log/$name.log"
    return $rc
}

# sdcpp_sampling NAME: the seconds of sd.cpp's "sampling completed, taking X s".
sdcpp_sampling() {
    sed -n 's/.*sampling completed, taking \([0-9.]*\)s.*/\1/p' "$log/$1.log" | tail -1
}

row() { rows+=("$1|$2|$3"); printf '   -> %s: %s s\n' "$1" "$2"; }

ratio() { # ratio A B: A / B, or "-" when either is missing
    if [ -n "$1" ] && [ -n "$2" ] && [ "$2" != 0 ]; then awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a / b}'; else echo -; fi
}

# ---- SD1.5 512x512 CFG step: sdflow fp32 / bf16, PyTorch fp32 / bf16 (issue 15) ----
if [ $sd15 = 1 ]; then
    ck=$files/checkpoints/sd15_f16.safetensors
    fp32= bf16= tfp32= tbf16=
    if run sd15_sdflow_fp32 "$build/bench_unet" "$ck" --sizes 64 --reps 1; then
        fp32=$(sed -n 's/.*best \([0-9.]*\) s.*/\1/p' "$log/sd15_sdflow_fp32.log" | tail -1)
        row "SD1.5 512 CFG step, sdflow fp32" "$fp32" "$rss"
    fi
    if run sd15_sdflow_bf16 env SDFLOW_PRECISION=bf16 "$build/bench_unet" "$ck" --sizes 64 --reps 1; then
        bf16=$(sed -n 's/.*best \([0-9.]*\) s.*/\1/p' "$log/sd15_sdflow_bf16.log" | tail -1)
        row "SD1.5 512 CFG step, sdflow bf16" "$bf16" "$rss"
    fi
    if run sd15_torch python3 "$(dirname "$0")/torch_unet_step.py" --threads "$threads" --reps 1 --size 64; then
        tfp32=$(sed -n "s/.* fp32: best \([0-9.]*\) s wall.*/\1/p" "$log/sd15_torch.log" | tail -1)
        tbf16=$(sed -n "s/.* bf16: best \([0-9.]*\) s wall.*/\1/p" "$log/sd15_torch.log" | tail -1)
        row "SD1.5 512 CFG step, PyTorch fp32" "$tfp32" "$rss"
        row "SD1.5 512 CFG step, PyTorch bf16" "$tbf16" "$rss"
    fi
    ratios+=("SD1.5 512 CFG step, sdflow / PyTorch: fp32 $(ratio "$fp32" "$tfp32"), bf16 $(ratio "$bf16" "$tbf16")")
fi

# ---- SDXL CFG step (issue 9 part 6) ----
if [ $sdxl = 1 ]; then
    ck=$files/checkpoints/sdxl_f16.safetensors
    lat=$((sdxl_size / 8))
    xl_sdflow= xl_sdcpp=
    if run sdxl_sdflow "$build/bench_unet" "$ck" --sizes "$lat" --reps 1; then
        xl_sdflow=$(sed -n 's/.*best \([0-9.]*\) s.*/\1/p' "$log/sdxl_sdflow.log" | tail -1)
        row "SDXL ${sdxl_size} CFG step, sdflow (f16 weights)" "$xl_sdflow" "$rss"
    fi
    if [ $use_sdcpp = 1 ] && run sdxl_sdcpp "$sdcpp" -m "$ck" -p "a photograph of an astronaut riding a horse" \
        -n "blurry" -W "$sdxl_size" -H "$sdxl_size" --steps 1 --cfg-scale 7 --sampling-method euler --seed 1 \
        -t "$threads" --eager-load -o "$log/sdxl_sdcpp.png" -v; then
        xl_sdcpp=$(sdcpp_sampling sdxl_sdcpp)
        row "SDXL ${sdxl_size} CFG step, stable-diffusion.cpp" "$xl_sdcpp" "$rss"
    fi
    ratios+=("SDXL ${sdxl_size} CFG step, sd.cpp / sdflow: $(ratio "$xl_sdcpp" "$xl_sdflow")")
fi

# ---- FLUX schnell one step (issue 16 part 3) ----
flux_pair() { # flux_pair QUANT
    local q=$1 f=$files/diffusion_models/flux1-schnell-$1.gguf a= b=
    if run "flux_${q}_sdflow" "$build/bench_flux" "$f" --size "$flux_size" --tokens 256; then
        a=$(sed -n 's/.*best \([0-9.]*\) s over.*/\1/p' "$log/flux_${q}_sdflow.log" | tail -1)
        row "FLUX schnell ${flux_size} step, $q, sdflow" "$a" "$rss"
    fi
    if [ $use_sdcpp = 1 ] && run "flux_${q}_sdcpp" "$sdcpp" --diffusion-model "$f" \
        --clip_l "$files/text_encoders/clip_l.safetensors" \
        --t5xxl "$files/text_encoders/t5-v1_1-xxl-encoder-Q8_0.gguf" --vae "$files/vae/ae.safetensors" \
        -p "a photograph of an astronaut riding a horse" -W "$flux_size" -H "$flux_size" --steps 1 \
        --cfg-scale 1 --sampling-method euler --seed 1 -t "$threads" --eager-load -o "$log/flux_${q}_sdcpp.png" -v; then
        b=$(sdcpp_sampling "flux_${q}_sdcpp")
        row "FLUX schnell ${flux_size} step, $q, stable-diffusion.cpp" "$b" "$rss"
    fi
    ratios+=("FLUX schnell ${flux_size} step $q, sd.cpp / sdflow: $(ratio "$b" "$a")")
}
if [ $flux = 1 ]; then
    flux_pair Q4_0
    [ $q8 = 0 ] || flux_pair Q8_0
fi

if [ $txt2img = 1 ]; then
    src=$(cd "$(dirname "$0")/.." && pwd)
    if run flux_txt2img "$build/sdflow" run "$src/graphs/flux-schnell.xml" --models-dir "$files" --no-cache \
        --output-dir "$log" --set unet=flux1-schnell-Q4_0.gguf --set t5xxl=t5-v1_1-xxl-encoder-Q8_0.gguf \
        --set clip_l=clip_l.safetensors --set vae=ae.safetensors --set width="$flux_size" \
        --set height="$flux_size" --set steps=4; then
        row "FLUX schnell ${flux_size} txt2img, 4 steps, sdflow (whole run)" "$wall" "$rss"
    fi
fi

echo
echo "Summary ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, threads $threads, load $(cut -d' ' -f1-3 /proc/loadavg)):"
printf '| %-50s | %9s | %12s |\n' "run" "seconds" "peak RSS MiB"
printf '| %-50s | %9s | %12s |\n' "---" "---" "---"
for r in "${rows[@]}"; do
    IFS='|' read -r label s k <<< "$r"
    printf '| %-50s | %9s | %12s |\n' "$label" "$s" "$((${k:-0} / 1024))"
done
for r in "${ratios[@]}"; do echo "$r"; done
echo "Total $((SECONDS - start)) s. Raw outputs: $log"
