#!/bin/bash
# LoadImage -> SaveImage through `sdflow run` with bad input images: a truncated PNG (exit 3), a
# PNG whose header claims 100000x100000 (exit 4), a file that is not a PNG (exit 3), a missing
# image (exit 3, directory named). Each message names the node and the file; nothing is written.
. "$(dirname "$0")/lib.bash"
RUN_SHOW_STDOUT=1
export TMPDIR=$T SDFLOW_CACHE=$T/cache.db
unset SDFLOW_INPUT SDFLOW_OUTPUT SDFLOW_MODELS
mkdir -p "$T/in"
head -c 100 "$SRC/examples/input/shapes.png" >"$T/in/cut.png"
printf '\x89PNG\r\n\x1a\n\x00\x00\x00\x0d\x49\x48\x44\x52\x00\x01\x86\xa0\x00\x01\x86\xa0\x08\x02\x00\x00\x00\x27\x30\x9c\x9f\x00\x00\x00\x00\x49\x45\x4e\x44\xae\x42\x60\x82' >"$T/in/huge.png"
echo "not an image" >"$T/in/text.png"
IN=$(realpath "$T/in")

workflow() { # workflow IMAGE_NAME > $T/wf.xml
    cat >"$T/wf.xml" <<EOF
<workflow version="1">
  <node id="load" type="LoadImage"><input name="image">$1</input></node>
  <node id="save" type="SaveImage"><input name="images" from="load" output="IMAGE"/></node>
</workflow>
EOF
}

workflow cut.png
run 3 run "$T/wf.xml" --input-dir "$T/in" --output-dir "$T/out.d" --quiet
check "truncated" grep -q "node 'load' (LoadImage): $IN/cut.png: truncated (chunk 'IDAT' of [0-9]* bytes runs past the end of the file)$" "$T/err"

workflow huge.png
run 4 run "$T/wf.xml" --input-dir "$T/in" --output-dir "$T/out.d" --quiet
check "pixel limit" grep -q "node 'load' (LoadImage): $IN/huge.png: image 100000x100000 exceeds the pixel limit (32768 per side, 67108864 pixels)$" "$T/err"

workflow text.png
run 3 run "$T/wf.xml" --input-dir "$T/in" --output-dir "$T/out.d" --quiet
check "not a PNG" grep -q "node 'load' (LoadImage): $IN/text.png: not a PNG file$" "$T/err"

workflow nope.png
run 3 run "$T/wf.xml" --input-dir "$T/in" --output-dir "$T/out.d" --quiet
check "missing image named with the directory" grep -q "nope.png' not found (searched: $T/in)" "$T/err"

check "nothing written" test -z "$(ls -A "$T/out.d" 2>/dev/null)"

# LoadImageMask through the same path: an unknown channel is refused before running.
cat >"$T/mask.xml" <<'EOF'
<workflow version="1">
  <node id="m" type="LoadImageMask">
    <input name="image">cut.png</input>
    <input name="channel">purple</input>
  </node>
</workflow>
EOF
run 3 run "$T/mask.xml" --input-dir "$T/in" --output m --quiet
check "bad channel" grep -q "node 'm' input 'channel': 'purple' is not one of: alpha red green blue" "$T/err"

if [ "$fails" != 0 ]; then
    echo "load_image.sh: $fails failed"
    exit 1
fi
echo "load_image.sh: all passed"
