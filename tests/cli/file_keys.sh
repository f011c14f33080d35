#!/bin/bash
# What the cache keys cover (docs/caching.md): a checkpoint rewritten in place with its mtime put
# back (dd conv=notrunc, touch -r) is hashed again, so nothing is served from the old weights and
# the PNG records the new hash; the files embedding:NAME names are in CLIPTextEncode's key and in
# the provenance (replay verifies them by name): adding, changing or removing one re-encodes the
# prompt; embedding:SDA768.pt (ComfyUI's example) resolves, and a pickled one is refused in one
# line.
. "$(dirname "$0")/lib.bash"
mkdir -p "$T/models/checkpoints" "$T/models/embeddings"
ck=$T/models/checkpoints/tiny.safetensors
"$MK" --preset tiny "$ck" >/dev/null || { echo "FAIL: mkckpt"; exit 1; }
base=(--models-dir "$T/models" --output-dir "$T/o" --cache "$T/cache.db" --set checkpoint=tiny.safetensors
      --set steps=1 --set width=64 --set height=64)
hash() { b2sum -l 256 "$1" | cut -d' ' -f1; }
# ran NODE / cached NODE: the run summary says so.
ran() { grep -q "^  ran .*  $1 (" "$T/err"; }
cached() { grep -q "^  cached .*  $1 (" "$T/err"; }

run 0 run "$SRC/graphs/txt2img.xml" "${base[@]}"
check "the PNG records the checkpoint's hash" grep -qa "$(hash "$ck")" "$(head -n 1 "$T/out")"
cp -p "$ck" "$T/ref"
size=$(stat -c %s "$ck")
printf '\x3f\x3f\x3f\x3f' | dd of="$ck" bs=1 seek=$((size - 4096)) conv=notrunc status=none
touch -r "$T/ref" "$ck"
check "same size and mtime after the rewrite" \
    test "$(stat -c '%s %y' "$ck")" = "$(stat -c '%s %y' "$T/ref")"
check "the content did change" bash -c '! cmp -s "$0" "$1"' "$ck" "$T/ref"
run 0 run "$SRC/graphs/txt2img.xml" "${base[@]}"
check "rewritten in place: the sampler runs again" ran sampler
check "rewritten in place: the prompt is encoded again" ran positive
check "the PNG records the new hash" grep -qa "$(hash "$ck")" "$(head -n 1 "$T/out")"
check "and not the old one" bash -c '! grep -qa "$0" "$1"' "$(hash "$T/ref")" "$(head -n 1 "$T/out")"
run 0 run "$SRC/graphs/txt2img.xml" "${base[@]}"
check "unchanged since: from the cache" grep -q "^sdflow: done: 1 ran, 1 from cache, 5 skipped" "$T/err"

# mkemb FILE OCTAL: a 1x64 F32 embedding (emb_params) whose bytes are all the byte OCTAL.
mkemb() {
    local h='{"emb_params":{"dtype":"F32","shape":[1,64],"data_offsets":[0,256]}}'
    while [ $((${#h} % 8)) != 0 ]; do h="$h "; done
    { printf "\\$(printf %03o ${#h})\\0\\0\\0\\0\\0\\0\\0"; printf '%s' "$h"; head -c 256 /dev/zero | tr '\0' "\\$2"; } >"$1"
}
star=$T/models/embeddings/star.safetensors
emb=("${base[@]}" --set "prompt=a cat, embedding:star by the sea")
run 0 run "$SRC/graphs/txt2img.xml" "${emb[@]}"
check "unknown embedding: the warning names it alone" \
    grep -qx "sdflow: warning: embedding:star does not exist, ignoring" "$T/err"
mkemb "$star" 074
run 0 run "$SRC/graphs/txt2img.xml" "${emb[@]}"
check "adding the embedding file re-encodes the prompt" ran positive
check "the negative prompt names none: cached" cached negative
check "the provenance lists the embedding with its hash" \
    grep -qa "\"embeddings/star.safetensors\":\"$(hash "$star")\"" "$(head -n 1 "$T/out")"
mkemb "$star" 075
run 0 run "$SRC/graphs/txt2img.xml" "${emb[@]}"
check "changing the embedding file re-encodes the prompt" ran positive
check "the provenance has its new hash" grep -qa "\"embeddings/star.safetensors\":\"$(hash "$star")\"" "$(head -n 1 "$T/out")"
# Replay verifies the embedding by its recorded name, as it does the checkpoint.
png=$(head -n 1 "$T/out")
run 0 replay "$png" --models-dir "$T/models" --no-cache
check "replayed with the same embedding: identical" grep -q "^identical: " "$T/out"
mkemb "$star" 076
run 3 replay "$png" --models-dir "$T/models" --no-cache
check "replay names the changed embedding" \
    grep -q "^sdflow: error: file embeddings/star.safetensors (.*) has changed: recorded blake2b" "$T/err"
mkemb "$star" 075
rm "$star"
run 0 run "$SRC/graphs/txt2img.xml" "${emb[@]}"
check "removing it gives the first key back: from the cache" \
    grep -q "^sdflow: done: 1 ran, 1 from cache, 5 skipped" "$T/err"
check "no embedding in the provenance now" bash -c '! grep -qa "embeddings/star" "$0"' "$(head -n 1 "$T/out")"

# ComfyUI's example names the file with its extension; a pickled .pt is refused in one line.
mkemb "$T/models/embeddings/SDA768.pt" 074
run 0 run "$SRC/graphs/txt2img.xml" "${base[@]}" --set "prompt=embedding:SDA768.pt, a cat"
check "embedding:SDA768.pt resolves" bash -c '! grep -q "does not exist" "$0"' "$T/err"
check "and is in the provenance" grep -qa "embeddings/SDA768.pt\"" "$(head -n 1 "$T/out")"
printf '\x80\x02\x63\x63\x6f\x6c\x6c\x65\x63\x74' >"$T/models/embeddings/pickled.pt"
run 0 run "$SRC/graphs/txt2img.xml" "${base[@]}" --set "prompt=embedding:pickled a cat"
check "a pickle is named as one in one line" grep -qx "sdflow: warning: embedding:pickled cannot be used: \
$T/models/embeddings/pickled.pt: a PyTorch pickle checkpoint (raw pickle), not safetensors: pickle checkpoints \
are not supported yet; convert it to .safetensors" \
    "$T/err"

finish file_keys.sh
