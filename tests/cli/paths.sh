#!/bin/bash
# Paths in workflows (issue 13 item 5): an absolute path needs --allow-absolute-paths (run,
# validate); a symlink in the input directory or a prefix subfolder in the output directory must
# not lead out of it (LoadImage, LoadLatent, SaveImage); a filename prefix with a newline or other
# control byte is refused by validate and by run before any node runs. Nothing is written.
. "$(dirname "$0")/lib.bash"
RUN_SHOW_STDOUT=1
export TMPDIR=$T SDFLOW_CACHE=$T/cache.db
unset SDFLOW_INPUT SDFLOW_OUTPUT SDFLOW_MODELS
mkdir -p "$T/in" "$T/o" "$T/outside"
cp "$SRC/examples/input/shapes.png" "$T/in/shapes.png"
cp "$SRC/examples/input/shapes.png" "$T/outside/secret.png"

workflow() { # workflow NODE_TYPE INPUT NAME PREFIX > $T/wf.xml
    cat >"$T/wf.xml" <<EOF
<workflow version="1">
  <param name="prefix" type="STRING" default="$4">filename prefix</param>
  <node id="load" type="$1"><input name="$2">$3</input></node>
  <node id="save" type="SaveImage">
    <input name="images" from="load" output="IMAGE"/>
    <input name="filename_prefix" param="prefix"/>
  </node>
</workflow>
EOF
}
dirs=(--input-dir "$T/in" --output-dir "$T/o" --quiet)

# An absolute path: refused by validate and run, naming the option; accepted with it.
workflow LoadImage image "$T/outside/secret.png" shot
run 3 validate "$T/wf.xml" --input-dir "$T/in"
check "validate: absolute path refused" grep -qx "$T/wf.xml:3: node 'load' input 'image': absolute path '$T/outside/secret.png' is not allowed (use --allow-absolute-paths)" "$T/err"
run 3 run "$T/wf.xml" "${dirs[@]}"
check "run: absolute path refused" grep -q "absolute path '$T/outside/secret.png' is not allowed (use --allow-absolute-paths)" "$T/err"
check "nothing written" test -z "$(ls -A "$T/o")"
run 0 validate "$T/wf.xml" --input-dir "$T/in" --allow-absolute-paths
run 0 run "$T/wf.xml" "${dirs[@]}" --allow-absolute-paths
check "allowed with the option" test "$(cat "$T/out")" = "$T/o/shot_00001_.png"
rm "$T/o/shot_00001_.png"

# Symlinks in the input directory that lead out of it: to a file, through a folder.
ln -s "$T/outside/secret.png" "$T/in/link.png"
ln -s "$T/outside" "$T/in/up"
for name in link.png up/secret.png; do
    workflow LoadImage image "$name" shot
    run 3 run "$T/wf.xml" "${dirs[@]}"
    check "input symlink $name refused" grep -q "node 'load' input 'image': $T/in/$name leads outside $T/in (to $T/outside/secret.png)" "$T/err"
done
ln -s "$T/outside/secret.png" "$T/in/x.latent"
workflow LoadLatent latent x.latent shot
run 3 validate "$T/wf.xml" --input-dir "$T/in"
check "LoadLatent symlink refused" grep -q "node 'load' input 'latent': $T/in/x.latent leads outside $T/in" "$T/err"
ln -s shapes.png "$T/in/inside.png"
workflow LoadImage image inside.png shot
run 0 run "$T/wf.xml" "${dirs[@]}"
check "a symlink that stays inside is followed" test "$(cat "$T/out")" = "$T/o/shot_00001_.png"

# A prefix subfolder that is a symlink leading out of the output directory: refused, nothing
# written or created outside.
ln -s "$T/outside" "$T/o/link"
for prefix in link/x link/new/x; do
    workflow LoadImage image shapes.png "$prefix"
    run 3 run "$T/wf.xml" "${dirs[@]}"
    check "output symlink $prefix refused" grep -q "node 'save' (SaveImage): $T/o/link leads outside $T/o (to $T/outside)" "$T/err"
done
check "nothing written outside" test "$(ls "$T/outside")" = "secret.png"

# A newline, tab or DEL in the prefix (by --set, or as a character reference in the XML): validate
# and run refuse it before any node runs.
workflow LoadImage image shapes.png ok
for byte in '\n' '\t' '\177'; do
    code=$(printf '0x%02x' "$(printf "$byte" | od -An -tu1)")
    run 3 validate "$T/wf.xml" --input-dir "$T/in" --set "prefix=$(printf "a${byte}b")"
    check "validate: control byte $code" grep -qx "$T/wf.xml:6: node 'save' input 'filename_prefix': parameter 'prefix': must not contain control characters (byte $code at offset 1)" "$T/err"
    run 3 run "$T/wf.xml" --input-dir "$T/in" --output-dir "$T/o" --json-progress --set "prefix=$(printf "a${byte}b")"
    check "run: control byte $code refused" grep -q "must not contain control characters (byte $code at offset 1)" "$T/err"
    check "run: no node started" bash -c '! grep -q "\"event\": *\"start\"" "$0"' "$T/err"
done
sed -i 's|<input name="filename_prefix" param="prefix"/>|<input name="filename_prefix">two\&#10;lines</input>|' "$T/wf.xml"
run 3 validate "$T/wf.xml" --input-dir "$T/in"
check "validate: a newline in the XML" grep -qx "$T/wf.xml:6: node 'save' input 'filename_prefix': must not contain control characters (byte 0x0a at offset 3)" "$T/err"
workflow LoadImage image shapes.png ok
run 3 run "$T/wf.xml" "${dirs[@]}" --set prefix=../up
check "--set prefix with '..' refused" grep -q "parameter 'prefix': '../up' must be a relative name without '..' components" "$T/err"
check "only the two images written" test "$(ls "$T/o" | tr '\n' ' ')" = "link shot_00001_.png "

finish paths.sh
