#!/usr/bin/env bash
# The engine comparisons of docs/benchmarks.md, for a quiet machine, in one run: sdflow against
# stable-diffusion.cpp (issue 9 part 6, issue 16 part 3) and PyTorch (issue 15 part 5), same
# files, sizes, steps, sampler (euler), seed and threads, per precision (sdflow and PyTorch fp32
# and bf16; sd.cpp computes with the file's f16 or quantised weights). Prints each figure, the
# ratios and each process's peak RSS, and a table at the end; raw outputs go to the log folder.
#
#   bench/quiet_comparisons.sh [options]
#     --build DIR        sdflow build folder (default build)
#     --sdcpp BIN        stable-diffusion.cpp's sd-cli (default /work/sdcpp/build/bin/sd-cli;
#                        bench/build_sdcpp.sh builds it)
#     --python PY        the Python with torch and diffusers for the PyTorch peers (default python3;
#                        a peer without them prints "skipped: ..." and the run goes on)
#     --files DIR        model files (default /work/bench-files; bench/make_bench_files.sh writes them)
#     --log DIR          raw outputs (default /tmp/quiet-comparisons)
#     --threads N        threads of every engine (default 2)
#     --sd15-sizes LIST  SD1.5 CFG step image sides, comma list (default 256,512)
#     --sdxl-sizes LIST  SDXL CFG step image sides (default 1024; --sdxl-size N is the same)
#     --flux-size N      FLUX image side (default 512)
#     --q8               also FLUX on the Q8_0 transformer (the file must exist: make_bench_files.sh --q8)
#     --skip-sd15        skip the SD1.5 CFG step rows
#     --skip-vae         skip the SD1.5 VAE decode rows
#     --vae-size N       their image side (default 512)
#     --skip-sdxl        skip SDXL
#     --skip-flux        skip FLUX
#     --skip-sdcpp       no stable-diffusion.cpp rows
#     --skip-torch       no PyTorch rows
#     --txt2img-sd15     also the whole SD1.5 txt2img (text encoders, --txt2img-steps
#                        euler steps with CFG 8, VAE decode): sdflow run graphs/txt2img.xml per
#                        precision, bench/torch_txt2img.py (diffusers' StableDiffusionPipeline
#                        from the same file) per precision, sd-cli; process wall and peak RSS
#     --txt2img-steps N  steps of --txt2img-sd15 (default 4)
#     --txt2img-size N   its image side (default 512)
#     --txt2img          also the whole FLUX schnell txt2img through sdflow (4 steps at --flux-size,
#                        Q4_0 transformer, Q8_0 T5) for its peak RSS (issue 16's <= 10 GB; 10-20 min)
#     --dry-run          print the commands only
#
# Every engine runs once per row, one process per engine and precision (so that each peak RSS is
# that precision's): sdflow's bench_unet / bench_pipeline one untimed forward or decode first
# (weight upload, kernel builds, bf16 weight conversion), then one timed; PyTorch's peers the
# same (oneDNN kernels, autocast's weight casts); sd.cpp's step is its own "sampling completed,
# taking X s" with --eager-load (sd.cpp otherwise loads the diffusion model's weights lazily,
# inside that time), its VAE decode "decode_first_stage completed, taking X s" of the SD1.5
# step's run at the same size. The txt2img rows are whole processes (loading included).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
build=build sdcpp=/work/sdcpp/build/bin/sd-cli python=python3 files=/work/bench-files log=/tmp/quiet-comparisons
threads=2 sd15_sizes=256,512 sdxl_sizes=1024 flux_size=512 q8=0 sd15=1 vae=1 sdxl=1 flux=1 use_sdcpp=1
use_torch=1 dry=0 txt2img=0 txt2img_sd15=0 txt2img_steps=4 txt2img_size=512 vae_size=512
while [ $# -gt 0 ]; do
    case "$1" in
        --build) build=$2; shift ;;
        --sdcpp) sdcpp=$2; shift ;;
        --python) python=$2; shift ;;
        --files) files=$2; shift ;;
        --log) log=$2; shift ;;
        --threads) threads=$2; shift ;;
        --sd15-sizes) sd15_sizes=$2; shift ;;
        --sdxl-size | --sdxl-sizes) sdxl_sizes=$2; shift ;;
        --flux-size) flux_size=$2; shift ;;
        --q8) q8=1 ;;
        --skip-sd15) sd15=0 ;;
        --skip-vae) vae=0 ;;
        --vae-size) vae_size=$2; shift ;;
        --skip-sdxl) sdxl=0 ;;
        --skip-flux) flux=0 ;;
        --skip-sdcpp) use_sdcpp=0 ;;
        --skip-torch) use_torch=0 ;;
        --txt2img) txt2img=1 ;;
        --txt2img-sd15) txt2img_sd15=1 ;;
        --txt2img-steps) txt2img_steps=$2; shift ;;
        --txt2img-size) txt2img_size=$2; shift ;;
        --dry-run) dry=1 ;;
        -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1' "$0"; exit 0 ;;
        *) echo "quiet_comparisons: unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
mkdir -p "$log"
export POCL_MAX_PTHREAD_COUNT=$threads OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=passive HF_HUB_OFFLINE=1
rows=()   # "label|seconds|peak RSS KiB"
ratios=() # "what: value"
start=$SECONDS
sdcpp_sd15_done=" " # sizes of the SD1.5 sd.cpp runs done
prompt="a photograph of an astronaut riding a horse"

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

# sdcpp_time NAME WHAT: the seconds of sd.cpp's "WHAT completed, taking X s" (sampling, decode_first_stage).
sdcpp_time() {
    sed -n "s/.*$2 completed, taking \([0-9.]*\)s.*/\1/p" "$log/$1.log" | tail -1
}

# best NAME PATTERN: the number after PATTERN (a sed regex) on the log's last matching line.
best() {
    sed -n "s/.*$2 \([0-9.]*\) s.*/\1/p" "$log/$1.log" | tail -1
}

row() { rows+=("$1|$2|$3"); printf '   -> %s: %s s\n' "$1" "$2"; }

ratio() { # ratio A B: A / B, or "-" when either is missing
    if [ -n "$1" ] && [ -n "$2" ] && [ "$2" != 0 ]; then awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a / b}'; else echo -; fi
}

# unet_rows FAMILY FILE SIZE: the CFG step (batch 2) at image side SIZE: sdflow fp32 and bf16
# (bench_unet), PyTorch fp32 and bf16 (torch_unet_step.py), sd.cpp (one sampling step).
unet_rows() {
    local fam=$1 ck=$2 s=$3 lat=$(($3 / 8)) p label
    local -A got=()
    label="$([ "$fam" = sd15 ] && echo SD1.5 || echo SDXL) $s CFG step"
    for p in fp32 bf16; do
        if run "${fam}_${s}_sdflow_$p" env SDFLOW_PRECISION=$p "$build/bench_unet" "$ck" --sizes "$lat" --reps 1; then
            got[sdflow_$p]=$(best "${fam}_${s}_sdflow_$p" best)
            row "$label, sdflow $p" "${got[sdflow_$p]}" "$rss"
        fi
    done
    for p in fp32 bf16; do
        if [ $use_torch = 1 ] && run "${fam}_${s}_torch_$p" "$python" "$here/torch_unet_step.py" --family "$fam" \
            --threads "$threads" --reps 1 --size "$lat" --precision $p; then
            got[torch_$p]=$(best "${fam}_${s}_torch_$p" "$p: best")
            row "$label, PyTorch $p" "${got[torch_$p]}" "$rss"
        fi
    done
    if [ $use_sdcpp = 1 ] && run "${fam}_${s}_sdcpp" "$sdcpp" -m "$ck" -p "$prompt" -n "blurry" -W "$s" -H "$s" \
        --steps 1 --cfg-scale 7 --sampling-method euler --seed 1 -t "$threads" --eager-load \
        -o "$log/${fam}_${s}_sdcpp.png" -v; then
        got[sdcpp]=$(sdcpp_time "${fam}_${s}_sdcpp" sampling)
        row "$label, stable-diffusion.cpp (f16 weights)" "${got[sdcpp]}" "$rss"
    fi
    [ $use_sdcpp = 0 ] || [ "$fam" != sd15 ] || sdcpp_sd15_done="$sdcpp_sd15_done $s " # its decode: the VAE row's
    ratios+=("$label, sdflow / PyTorch: fp32 $(ratio "${got[sdflow_fp32]:-}" "${got[torch_fp32]:-}"), bf16 $(ratio \
        "${got[sdflow_bf16]:-}" "${got[torch_bf16]:-}"); sd.cpp / sdflow: fp32 $(ratio "${got[sdcpp]:-}" \
        "${got[sdflow_fp32]:-}"), bf16 $(ratio "${got[sdcpp]:-}" "${got[sdflow_bf16]:-}")")
}

# ---- SD1.5 CFG step at each size (issue 15) ----
sd15_ck=$files/checkpoints/sd15_f16.safetensors
if [ $sd15 = 1 ]; then
    for s in ${sd15_sizes//,/ }; do unet_rows sd15 "$sd15_ck" "$s"; done
fi

# ---- SD1.5 VAE decode (issue 15 part 1) ----
if [ $vae = 1 ]; then
    declare -A dec=()
    v=$vae_size
    for p in fp32 bf16; do
        if run "vae_${v}_sdflow_$p" env SDFLOW_PRECISION=$p "$build/bench_pipeline" "$sd15_ck" --size "$v" --reps 1; then
            dec[sdflow_$p]=$(best "vae_${v}_sdflow_$p" "decode: best")
            row "SD1.5 VAE decode $v, sdflow $p" "${dec[sdflow_$p]}" "$rss"
        fi
        if [ $use_torch = 1 ] && run "vae_${v}_torch_$p" "$python" "$here/torch_vae_decode.py" --threads "$threads" \
            --reps 1 --size $((v / 8)) --precision $p; then
            dec[torch_$p]=$(best "vae_${v}_torch_$p" "$p: best")
            row "SD1.5 VAE decode $v, PyTorch $p" "${dec[torch_$p]}" "$rss"
        fi
    done
    # sd.cpp: the decode of the SD1.5 step's run at this size (one of its own when that row did not run)
    if [ $use_sdcpp = 1 ] && { [[ "$sdcpp_sd15_done" == *" $v "* ]] || run "sd15_${v}_sdcpp" "$sdcpp" -m "$sd15_ck" \
        -p "$prompt" -n blurry -W "$v" -H "$v" --steps 1 --cfg-scale 7 --sampling-method euler --seed 1 \
        -t "$threads" --eager-load -o "$log/sd15_${v}_sdcpp.png" -v; } && [ $dry = 0 ]; then
        dec[sdcpp]=$(sdcpp_time "sd15_${v}_sdcpp" decode_first_stage)
        read -r _ k _ < <(grep -s '^TIME' "$log/sd15_${v}_sdcpp.time")
        row "SD1.5 VAE decode $v, stable-diffusion.cpp (whole run's RSS)" "${dec[sdcpp]}" "$k"
    fi
    ratios+=("SD1.5 VAE decode $v, sdflow / PyTorch: fp32 $(ratio "${dec[sdflow_fp32]:-}" "${dec[torch_fp32]:-}"), \
bf16 $(ratio "${dec[sdflow_bf16]:-}" "${dec[torch_bf16]:-}"); sd.cpp / sdflow fp32: $(ratio "${dec[sdcpp]:-}" \
"${dec[sdflow_fp32]:-}")")
fi

# ---- SDXL CFG step (issue 9 part 6) ----
if [ $sdxl = 1 ]; then
    for s in ${sdxl_sizes//,/ }; do unet_rows sdxl "$files/checkpoints/sdxl_f16.safetensors" "$s"; done
fi

# ---- FLUX schnell one step (issue 16 part 3) ----
flux_rows() { # flux_rows QUANT
    local q=$1 f=$files/diffusion_models/flux1-schnell-$1.gguf p b=
    local -A a=()
    for p in fp32 bf16; do
        if run "flux_${q}_sdflow_$p" env SDFLOW_PRECISION=$p "$build/bench_flux" "$f" --size "$flux_size" --tokens 256; then
            a[$p]=$(sed -n 's/.*best \([0-9.]*\) s over.*/\1/p' "$log/flux_${q}_sdflow_$p.log" | tail -1)
            row "FLUX schnell ${flux_size} step, $q, sdflow $p" "${a[$p]}" "$rss"
        fi
    done
    if [ $use_sdcpp = 1 ] && run "flux_${q}_sdcpp" "$sdcpp" --diffusion-model "$f" \
        --clip_l "$files/text_encoders/clip_l.safetensors" \
        --t5xxl "$files/text_encoders/t5-v1_1-xxl-encoder-Q8_0.gguf" --vae "$files/vae/ae.safetensors" \
        -p "$prompt" -W "$flux_size" -H "$flux_size" --steps 1 \
        --cfg-scale 1 --sampling-method euler --seed 1 -t "$threads" --eager-load -o "$log/flux_${q}_sdcpp.png" -v; then
        b=$(sdcpp_time "flux_${q}_sdcpp" sampling)
        row "FLUX schnell ${flux_size} step, $q, stable-diffusion.cpp" "$b" "$rss"
    fi
    ratios+=("FLUX schnell ${flux_size} step $q, sd.cpp / sdflow: fp32 $(ratio "$b" "${a[fp32]:-}"), bf16 $(ratio "$b" "${a[bf16]:-}")")
}
if [ $flux = 1 ]; then
    flux_rows Q4_0
    [ $q8 = 0 ] || flux_rows Q8_0
fi

# ---- whole SD1.5 txt2img (issue 15 part 5) ----
if [ $txt2img_sd15 = 1 ]; then
    n=$txt2img_steps ts=$txt2img_size
    declare -A tw=()
    for p in fp32 bf16; do
        if run "txt2img_sd15_sdflow_$p" "$build/sdflow" run "$here/../graphs/txt2img.xml" --models-dir "$files" \
            --no-cache --output-dir "$log" --precision $p --set checkpoint=sd15_f16.safetensors --set steps="$n" \
            --set width="$ts" --set height="$ts" --set prefix="txt2img_sd15_$p"; then
            tw[sdflow_$p]=$wall
            row "SD1.5 $ts txt2img, $n steps, sdflow $p (process)" "$wall" "$rss"
        fi
        if [ $use_torch = 1 ] && run "txt2img_sd15_torch_$p" "$python" "$here/torch_txt2img.py" "$sd15_ck" \
            --steps "$n" --size "$ts" --threads "$threads" --precision $p --out "$log/txt2img_sd15_torch_$p.png"; then
            tw[torch_$p]=$wall
            row "SD1.5 $ts txt2img, $n steps, PyTorch $p (process)" "$wall" "$rss"
            row "SD1.5 $ts txt2img, $n steps, PyTorch $p pipeline call alone" "$(best "txt2img_sd15_torch_$p" "txt2img")" "$rss"
        fi
    done
    if [ $use_sdcpp = 1 ] && run txt2img_sd15_sdcpp "$sdcpp" -m "$sd15_ck" -p "$prompt" -n "blurry, low quality" \
        -W "$ts" -H "$ts" --steps "$n" --cfg-scale 8 --sampling-method euler --seed 0 -t "$threads" \
        -o "$log/txt2img_sd15_sdcpp.png" -v; then
        tw[sdcpp]=$wall
        row "SD1.5 $ts txt2img, $n steps, stable-diffusion.cpp (process)" "$wall" "$rss"
    fi
    ratios+=("SD1.5 $ts txt2img $n steps (process wall), sdflow / PyTorch: fp32 $(ratio "${tw[sdflow_fp32]:-}" \
"${tw[torch_fp32]:-}"), bf16 $(ratio "${tw[sdflow_bf16]:-}" "${tw[torch_bf16]:-}"); sd.cpp / sdflow fp32: \
$(ratio "${tw[sdcpp]:-}" "${tw[sdflow_fp32]:-}")")
fi

if [ $txt2img = 1 ]; then
    if run flux_txt2img "$build/sdflow" run "$here/../graphs/flux-schnell.xml" --models-dir "$files" --no-cache \
        --output-dir "$log" --set unet=flux1-schnell-Q4_0.gguf --set t5xxl=t5-v1_1-xxl-encoder-Q8_0.gguf \
        --set clip_l=clip_l.safetensors --set vae=ae.safetensors --set width="$flux_size" \
        --set height="$flux_size" --set steps=4; then
        row "FLUX schnell ${flux_size} txt2img, 4 steps, sdflow (whole run)" "$wall" "$rss"
    fi
fi

echo
echo "Summary ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, threads $threads, load $(cut -d' ' -f1-3 /proc/loadavg)):"
printf '| %-62s | %9s | %12s |\n' "run" "seconds" "peak RSS MiB"
printf '| %-62s | %9s | %12s |\n' "---" "---" "---"
for r in "${rows[@]}"; do
    IFS='|' read -r label s k <<< "$r"
    printf '| %-62s | %9s | %12s |\n' "$label" "$s" "$((${k:-0} / 1024))"
done
for r in "${ratios[@]}"; do echo "$r"; done
echo "Total $((SECONDS - start)) s. Raw outputs: $log"
