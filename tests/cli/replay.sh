#!/bin/bash
# sdflow replay: usage errors, PNGs without a workflow, bad PNGs (truncated, 100000x100000
# header, a directory, a FIFO), then LoadImage -> SaveImage run + replay (identical, its private
# directory removed), --extract, a changed or missing input file named with its hash, and a
# txt2img PNG replayed with its models moved to another folder (by name, checked by hash).
. "$(dirname "$0")/lib.bash"
RUN_SHOW_STDOUT=1
export TMPDIR=$T SDFLOW_CACHE=$T/cache.db
unset SDFLOW_INPUT SDFLOW_OUTPUT SDFLOW_MODELS
mkdir -p "$T/in" "$T/out.d"
cp "$SRC/examples/input/shapes.png" "$T/in/shapes.png"

# Usage.
run 2 replay
check "no image" grep -q "no image given" "$T/err"
run 2 replay a.png b.png
check "two images" grep -q "one image at a time" "$T/err"
run 2 replay a.png --frobnicate
check "unknown option" grep -q "unknown option '--frobnicate'" "$T/err"
run 2 replay a.png --extract
check "missing value" grep -q "option '--extract' needs a value" "$T/err"
run 2 replay a.png --cache x.db --no-cache
check "cache conflict" grep -q -- "--cache and --no-cache exclude each other" "$T/err"
run 2 replay a.png --use-cache --no-cache
check "use-cache conflict" grep -q -- "--use-cache and --no-cache exclude each other" "$T/err"
run 2 replay a.png --cache x.db
check "--cache needs --use-cache" grep -q -- "--cache needs --use-cache" "$T/err"
run 0 replay --help
check "help" grep -q "usage: sdflow replay IMAGE.png" "$T/out"

# A PNG without a workflow: exit 3 naming the file; --extract writes nothing.
run 3 replay "$T/in/shapes.png"
check "no workflow named" grep -q "$T/in/shapes.png: no sdflow workflow in this PNG" "$T/err"
run 3 replay "$T/in/shapes.png" --extract "$T/x.xml"
check "nothing extracted" test ! -e "$T/x.xml"

# Bad PNGs.
head -c 100 "$T/in/shapes.png" >"$T/cut.png"
run 3 replay "$T/cut.png"
check "truncated" grep -q "^sdflow: error: $T/cut.png: truncated (chunk '[A-Za-z]*' of [0-9]* bytes runs past the end of the file)$" "$T/err"
printf '\x89PNG\r\n\x1a\n\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x01\x86\xa0\x00\x01\x86\xa0\x08\x02\x00\x00\x00\x27\x30\x9c\x9f\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82' >"$T/huge.png"
run 4 replay "$T/huge.png"
check "pixel limit" grep -q "$T/huge.png: image 100000x100000 exceeds the pixel limit (32768 per side, 67108864 pixels)" "$T/err"
echo "plain text" >"$T/text.png"
run 3 replay "$T/text.png"
check "not a PNG" grep -q "$T/text.png: not a PNG file" "$T/err"
run 5 replay "$T/missing.png"
check "missing PNG named" grep -q "$T/missing.png: No such file or directory" "$T/err"
mkdir "$T/dir.png"
run 5 replay "$T/dir.png"
check "I/O error named" grep -q "$T/dir.png: not a regular file" "$T/err"
mkfifo "$T/fifo.png"
SECONDS=0
run 5 replay "$T/fifo.png"
check "a FIFO is refused at once" grep -qx "sdflow: error: $T/fifo.png: not a regular file" "$T/err"
check "without waiting for a writer" test "$SECONDS" -lt 20

# Run LoadImage -> SaveImage, then replay it: identical.
cat >"$T/wf.xml" <<'EOF'
<workflow version="1">
  <node id="load" type="LoadImage"><input name="image">shapes.png</input></node>
  <node id="save" type="SaveImage">
    <input name="images" from="load" output="IMAGE"/>
    <input name="filename_prefix">shot</input>
  </node>
</workflow>
EOF
run 0 run "$T/wf.xml" --input-dir "$T/in" --output-dir "$T/out.d" --quiet
IMG=$T/out.d/shot_00001_.png
check "image written" test -f "$IMG"
run 0 replay "$IMG" --input-dir "$T/in"
check "identical" test "$(cat "$T/out")" = "identical: $IMG"
check "the replay directory is removed" test -z "$(ls "$T/sdflow")"
run 0 replay "$IMG" --input-dir "$T/in" --no-cache
check "identical without cache" grep -q "^identical: " "$T/out"
run 0 replay "$IMG" --input-dir "$T/in" --use-cache
check "identical from the cache" grep -q "^identical: " "$T/out"
check "no stray files in the output dir" test "$(ls "$T/out.d")" = "shot_00001_.png"

# --extract: the workflow with the same nodes, runnable again.
run 0 replay "$IMG" --extract "$T/extracted.xml"
check "extracted LoadImage" grep -q 'type="LoadImage"' "$T/extracted.xml"
check "extracted file name" grep -q "shapes.png" "$T/extracted.xml"
run 0 replay "$IMG" --extract -
check "extract to stdout" grep -q 'type="SaveImage"' "$T/out"
run 0 run "$T/extracted.xml" --input-dir "$T/in" --output-dir "$T/out.d" --quiet
check "extracted workflow runs" test -f "$T/out.d/shot_00002_.png"

# Changed input: exit 3 naming the file and its recorded hash; missing input likewise. The image
# is found by name in another input directory.
REAL=$(realpath "$T/in/shapes.png")
cp "$T/in/shapes.png" "$T/shapes.orig"
cp "$IMG" "$T/in/shapes.png"
run 3 replay "$IMG" --input-dir "$T/in"
check "changed input named" grep -qx "sdflow: error: file input/shapes.png ($REAL) has changed: recorded blake2b [0-9a-f]\{64\}, now [0-9a-f]\{64\}" "$T/err"
rm "$T/in/shapes.png"
run 3 replay "$IMG" --input-dir "$T/in"
check "missing input named" grep -q "input file 'shapes.png' not found (searched: $T/in)" "$T/err"
mkdir "$T/elsewhere"
cp "$T/shapes.orig" "$T/elsewhere/shapes.png"
run 0 replay "$IMG" --input-dir "$T/elsewhere"
check "replayed from another input directory" grep -q "^identical: " "$T/out"
cp "$T/shapes.orig" "$T/in/shapes.png"
run 0 replay "$IMG" --input-dir "$T/in"
check "no replay directory is left" test -z "$(ls "$T/sdflow")"

# Parameters are stored resolved: a --set override becomes the default in the embedded XML, so
# the replay reads the image the run read without any --set.
cat >"$T/param.xml" <<'EOF'
<workflow version="1">
  <param name="picture" type="STRING" default="absent.png">input image</param>
  <node id="load" type="LoadImage"><input name="image" param="picture"/></node>
  <node id="save" type="SaveImage">
    <input name="images" from="load" output="IMAGE"/>
    <input name="filename_prefix">param</input>
  </node>
</workflow>
EOF
run 0 run "$T/param.xml" --input-dir "$T/in" --output-dir "$T/out2" --set picture=shapes.png --quiet
run 0 replay "$T/out2/param_00001_.png" --extract "$T/param-resolved.xml"
check "override stored as the default" grep -q 'default="shapes.png"' "$T/param-resolved.xml"
run 0 replay "$T/out2/param_00001_.png" --input-dir "$T/in"
check "parameterised workflow replays" grep -q "^identical: " "$T/out"

# A mismatch: a 1x1 RGB input (10,20,30) is saved, then the saved PNG's image data is replaced
# by that of (13,20,30), keeping its text chunks. Replay exits 1 and reports 3 levels.
# (Bytes: signature, IHDR, IDAT = zlib of filter 0 + the pixel, IEND, each with its CRC.)
mkdir "$T/in1"
printf '\x89\x50\x4e\x47\x0d\x0a\x1a\x0a\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90\x77\x53\xde\x00\x00\x00\x0c\x49\x44\x41\x54\x78\x9c\x63\xe0\x12\x91\x03\x00\x00\x68\x00\x3d\x54\x08\xa3\xf7\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82' >"$T/in1/shapes.png"
run 0 run "$T/wf.xml" --input-dir "$T/in1" --output-dir "$T/out1" --quiet
ONE=$T/out1/shot_00001_.png
run 0 replay "$ONE" --input-dir "$T/in1"
IDAT_AT=$(grep -obUa IDAT "$ONE" | tail -n 1 | cut -d: -f1)
head -c $((IDAT_AT - 4)) "$ONE" >"$T/tampered.png"
printf '\x00\x00\x00\x0c\x49\x44\x41\x54\x78\x9c\x63\xe0\x15\x91\x03\x00\x00\x71\x00\x40\x63\x8e\x3f\x90\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82' >>"$T/tampered.png"
run 1 replay "$T/tampered.png" --input-dir "$T/in1"
check "mismatch reported" grep -q "^different: $T/tampered.png: max difference 3 of 255 levels (re-rendered as $T/sdflow/replay-....../shot_00001_.png)$" "$T/out"
check "mismatch error" grep -q "the replayed image differs by up to 3 of 255 levels" "$T/err"
KEPT=$(ls -d "$T"/sdflow/replay-*)
check "the different image is kept in a private directory" test "$(stat -c %a "$KEPT")" = 700
rm -r "$KEPT"

# PreviewImage writes numbered PNGs with the same provenance to the temp directory.
cat >"$T/preview.xml" <<'EOF'
<workflow version="1">
  <node id="load" type="LoadImage"><input name="image">shapes.png</input></node>
  <node id="look" type="PreviewImage"><input name="images" from="load" output="IMAGE"/></node>
</workflow>
EOF
run 0 run "$T/preview.xml" --input-dir "$T/in" --quiet
PREVIEW=$T/sdflow/sdflow_preview_00001_.png
check "preview written to the temp dir" test -f "$PREVIEW"
run 0 replay "$PREVIEW" --input-dir "$T/in"
check "preview replays" test "$(cat "$T/out")" = "identical: $PREVIEW"
check "output dir untouched by the preview" test "$(ls "$T/out.d")" = "$(printf 'shot_00001_.png\nshot_00002_.png')"

# txt2img on a tiny checkpoint, replayed after its model folder moved: the checkpoint is found
# by name in the new --models-dir and checked by hash; the PNG names no absolute path. A changed
# checkpoint is named with both hashes before anything runs.
mkdir -p "$T/m1/checkpoints"
"$MK" --preset tiny "$T/m1/checkpoints/tiny.safetensors" >/dev/null || fail "mkckpt"
run 0 run "$SRC/graphs/txt2img.xml" --models-dir "$T/m1" --output-dir "$T/o3" --no-cache --quiet \
    --set checkpoint=tiny.safetensors --set steps=2 --set width=64 --set height=64
TXT=$T/o3/txt2img_00001_.png
run 0 replay "$TXT" --extract -
check "no absolute path in the PNG (the provenance chunk is not compressed)" bash -c '! grep -qa "$0" "$1"' "$T/m1" "$TXT"
mv "$T/m1" "$T/m2"
run 0 replay "$TXT" --models-dir "$T/m2"
check "replayed with the models moved" test "$(cat "$T/out")" = "identical: $TXT"
printf 'x' | dd of="$T/m2/checkpoints/tiny.safetensors" bs=1 seek=$(($(stat -c %s "$T/m2/checkpoints/tiny.safetensors") - 1)) conv=notrunc status=none
run 3 replay "$TXT" --models-dir "$T/m2"
check "changed checkpoint named" grep -qx "sdflow: error: file checkpoints/tiny.safetensors ($T/m2/checkpoints/tiny.safetensors) has changed: recorded blake2b [0-9a-f]\{64\}, now [0-9a-f]\{64\}" "$T/err"

if [ "$fails" != 0 ]; then
    echo "replay.sh: $fails failed"
    exit 1
fi
echo "replay.sh: all passed"
