#!/usr/bin/env bash
# Builds stable-diffusion.cpp's CPU command-line program (sd-cli) beside the project, from bare
# git mirrors, as the comparison peer of docs/benchmarks.md. Nothing of it enters this repository.
#
#   bench/build_sdcpp.sh SDCPP_GIT_DIR GGML_GIT_DIR OUT_DIR [SDCPP_COMMIT]
#
# SDCPP_GIT_DIR: a (bare) git repository of leejet/stable-diffusion.cpp; GGML_GIT_DIR: one of
# ggml holding the commit the sd.cpp tree pins as its ggml submodule. SDCPP_COMMIT defaults to
# HEAD. Release build for the host CPU (GGML_NATIVE: AVX512/AMX where the CPU has them), CPU
# backend only, without the WebP/WebM back-ends and the server's web frontend (submodules we do
# not fetch). Result: OUT_DIR/build/bin/sd-cli. Uses -j${JOBS:-2}.
#
# A mirror that lacks large blobs (a size-limited snapshot lacks the tokenizer vocabularies in
# src/tokenizers/vocab/) still builds: T5's vocabulary (vocab/t5.hpp, FLUX's text encoder) is
# regenerated from the tokenizer.json in T5_TOKENIZER_JSON (default: this repository's
# data/t5/tokenizer.json.gz, gunzipped: the same file), every other missing vocabulary becomes a one-byte
# placeholder, so the models that need those (Qwen, Mistral, Gemma, GPT-OSS, UMT5) do not work
# in that build. The list of replaced files goes to OUT_DIR/VERSION.
set -euo pipefail
if [ $# -lt 3 ]; then
    echo "usage: $0 SDCPP_GIT_DIR GGML_GIT_DIR OUT_DIR [SDCPP_COMMIT]" >&2
    exit 2
fi
sdcpp_git=$1 ggml_git=$2 out=$3 commit=${4:-HEAD}
jobs=${JOBS:-2}
here=$(cd "$(dirname "$0")/.." && pwd)
t5_json=${T5_TOKENIZER_JSON:-$here/data/t5/tokenizer.json.gz}

src="$out/src"
rm -rf "$src"
mkdir -p "$src/ggml"
missing=()
while read -r _mode type hash path; do
    if [ "$type" = blob ] && ! git --git-dir="$sdcpp_git" cat-file -e "$hash" 2>/dev/null; then
        missing+=("$path")
    fi
done < <(git --git-dir="$sdcpp_git" ls-tree -r "$commit")
excludes=()
for p in "${missing[@]}"; do excludes+=(":(exclude)$p"); done
git --git-dir="$sdcpp_git" archive "$commit" -- . "${excludes[@]}" | tar -x -C "$src"
ggml_commit=$(git --git-dir="$sdcpp_git" ls-tree "$commit" ggml | awk '{print $3}')
git --git-dir="$ggml_git" archive "$ggml_commit" | tar -x -C "$src/ggml"

# Missing vocabulary headers: each defines one byte array named in vocab.cpp.
replaced=()
for p in "${missing[@]}"; do
    case "$p" in
        src/tokenizers/vocab/*.hpp) ;;
        *) continue ;;  # assets, docs: not part of the build
    esac
    name=$(basename "$p" .hpp)
    case "$name" in
        t5 | umt5) array="${name}_tokenizer_json_str" ;;
        qwen_merges) array="qwen2_merges_utf8_c_str" ;;
        *_merges) array="${name}_utf8_c_str" ;;
        *_vocab) array="${name}_json_utf8_c_str" ;;
        *) echo "build_sdcpp: no rule for missing $p" >&2; exit 1 ;;
    esac
    if [ "$name" = t5 ]; then
        { echo "static const unsigned char ${array}[] = {"; if [ "${t5_json%.gz}" != "$t5_json" ]; then gzip -dc "$t5_json"; else cat "$t5_json"; fi | xxd -i; echo "};"; } > "$src/$p"
        replaced+=("$p(from $t5_json)")
    else
        echo "static const unsigned char ${array}[] = {0x00};" > "$src/$p"
        replaced+=("$p(placeholder)")
    fi
done
{
    echo "stable-diffusion.cpp $(git --git-dir="$sdcpp_git" rev-parse "$commit")"
    echo "ggml $ggml_commit"
    [ ${#replaced[@]} -eq 0 ] || echo "replaced: ${replaced[*]}"
} > "$out/VERSION"

cmake -S "$src" -B "$out/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON \
    -DSD_WEBP=OFF -DSD_WEBM=OFF -DSD_SERVER_BUILD_FRONTEND=OFF -DSD_BUILD_SHARED_LIBS=OFF
cmake --build "$out/build" --target sd-cli -j"$jobs"
echo "built $out/build/bin/sd-cli"
cat "$out/VERSION"
