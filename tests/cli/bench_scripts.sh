#!/bin/bash
# bench/quiet_comparisons.sh (a developer tool, never timed here): --help prints its options,
# --dry-run prints one command per engine, precision and row (sd.cpp's SD1.5 512x512 run once, for
# its step and its VAE decode) and runs none of them (no Python,
# no model files needed), an unknown option is exit 2.
. "$(dirname "$0")/lib.bash"
Q=$SRC/bench/quiet_comparisons.sh

check "--help exits 0" bash -c '"$0" --help >"$1"' "$Q" "$T/help"
check "--help lists the txt2img and VAE options" grep -q -- "--txt2img-sd15" "$T/help"
check "--help lists --vae-size" grep -q -- "--vae-size N" "$T/help"

check "--dry-run exits 0" bash -c '"$0" --dry-run --q8 --txt2img-sd15 --build "$1" --log "$2/q" >"$2/dry"' \
    "$Q" "$BUILD" "$T"
for row in sd15_256_sdflow_fp32 sd15_256_torch_bf16 sd15_512_sdflow_bf16 sd15_512_torch_fp32 sd15_512_sdcpp \
    vae_512_sdflow_fp32 vae_512_sdflow_bf16 vae_512_torch_fp32 vae_512_torch_bf16 \
    sdxl_1024_sdflow_fp32 sdxl_1024_sdflow_bf16 sdxl_1024_torch_fp32 sdxl_1024_torch_bf16 sdxl_1024_sdcpp \
    flux_Q4_0_sdflow_bf16 flux_Q4_0_sdcpp flux_Q8_0_sdflow_fp32 flux_Q8_0_sdcpp \
    txt2img_sd15_sdflow_bf16 txt2img_sd15_torch_fp32 txt2img_sd15_sdcpp; do
    check "--dry-run prints the $row row" grep -q "^== $row: " "$T/dry"
done
check "sd.cpp's SD1.5 512x512 run gives the step and the VAE decode" test "$(grep -c "^== sd15_512_sdcpp: " "$T/dry")" = 1
check "each precision is its own process" grep -q "== sd15_512_torch_bf16: .*--precision bf16$" "$T/dry"
check "sdflow's bf16 rows set SDFLOW_PRECISION" grep -q "== vae_512_sdflow_bf16: env SDFLOW_PRECISION=bf16 " "$T/dry"
check "--dry-run runs nothing" bash -c '! ls "$0"/q/*.time 2>/dev/null | grep -q .' "$T"
check "--skip-torch leaves the PyTorch rows out" bash -c \
    '"$0" --dry-run --skip-torch --log "$1/q" | grep -q torch_ && exit 1 || exit 0' "$Q" "$T"
check "--sd15-sizes and --vae-size pick the sizes" bash -c \
    '"$0" --dry-run --sd15-sizes 128 --vae-size 64 --skip-sdxl --skip-flux --log "$1/q" | grep -q "== vae_64_torch_fp32: .*--size 8 "' \
    "$Q" "$T"

bash "$Q" --bogus >"$T/out" 2>"$T/err"
check "an unknown option is exit 2" test $? = 2
check "an unknown option is named" grep -qx "quiet_comparisons: unknown option --bogus" "$T/err"

finish bench_scripts
