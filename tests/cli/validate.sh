#!/bin/bash
# sdflow validate: every problem at once with file:line, node and input; exact messages and exit
# codes for malformed XML, DOCTYPE/external entities, billion laughs, deep nesting, cycles,
# dangling links, type mismatches, unknown nodes and inputs, out-of-range values, duplicate ids,
# missing files; and no input file is modified.
. "$(dirname "$0")/lib.bash"
cp "$SRC"/tests/data/xml/*.xml "$T"/
cd "$T" || exit 1
mkdir input
sums=$(md5sum ./*.xml)

# expect EXIT FILE: runs `sdflow validate --input-dir input FILE`, compares stderr with stdin.
expect() {
    local want=$1 file=$2
    "$BIN" validate --input-dir input "$file" >out 2>err
    local got=$?
    if [ "$got" != "$want" ]; then
        echo "FAIL: validate $file exited $got, expected $want"; fails=$((fails + 1))
    fi
    if ! diff -u - err; then echo "FAIL: validate $file: stderr differs"; fails=$((fails + 1)); fi
}

expect 3 malformed.xml <<'EOF'
malformed.xml:4: malformed XML: Opening and ending tag mismatch: node line 3 and workflow
EOF
expect 3 doctype_xxe.xml <<'EOF'
doctype_xxe.xml:2: DOCTYPE declarations are not allowed in workflow files
EOF
if grep -q "root:" out err; then echo "FAIL: /etc/passwd content leaked"; fails=$((fails + 1)); fi
expect 3 billion_laughs.xml <<'EOF'
billion_laughs.xml:2: DOCTYPE declarations are not allowed in workflow files
EOF
deep_xml() { # 10,000 nested elements, one per line
    echo '<workflow version="1">'
    for ((i = 0; i < 10000; i++)); do echo '<a>'; done
    for ((i = 0; i < 10000; i++)); do echo '</a>'; done
    echo '</workflow>'
}
deep_xml >deep.xml
expect 4 deep.xml <<'EOF'
deep.xml:65: elements nested deeper than 64 levels
EOF
rm deep.xml
expect 3 schema.xml <<'EOF'
schema.xml:4: schema: Invalid attribute from for element input
schema.xml:6: schema: Did not expect element nodes there
sdflow: error: 2 problems in schema.xml
EOF
expect 3 cycle.xml <<'EOF'
cycle.xml:3: cycle: 'a' -> 'b' -> 'c' -> 'a'
sdflow: error: 1 problem in cycle.xml
EOF
expect 3 dangling.xml <<'EOF'
dangling.xml:4: node 'a' input 'value': link from unknown node 'nowhere'
dangling.xml:7: node 'b' input 'value': node 'a' (PrimitiveInt) has no output 'LATENT' (outputs: INT)
sdflow: error: 2 problems in dangling.xml
EOF
expect 3 type_mismatch.xml <<'EOF'
type_mismatch.xml:7: node 'i' input 'value': type mismatch: output 'FLOAT' of node 'f' is FLOAT, the input is INT
sdflow: error: 1 problem in type_mismatch.xml
EOF
expect 3 unknown_node.xml <<'EOF'
unknown_node.xml:3: node 'k': unknown node type 'KSamplerAdvancedTurbo'
unknown_node.xml:4: node 'e': unknown node type 'EmptyLatentImag' (did you mean 'EmptyLatentImage'?)
sdflow: error: 2 problems in unknown_node.xml
EOF
expect 3 unknown_input.xml <<'EOF'
unknown_input.xml:4: node 'i' input 'vlaue': unknown input of PrimitiveInt (inputs: value)
sdflow: error: 1 problem in unknown_input.xml
EOF
expect 3 out_of_range.xml <<'EOF'
out_of_range.xml:4: node 'latent' input 'width': 100000 is out of range [16, 16384]
out_of_range.xml:5: node 'latent' input 'height': 'abc' is not an integer
sdflow: error: 2 problems in out_of_range.xml
EOF
expect 3 duplicate_ids.xml <<'EOF'
duplicate_ids.xml:4: node 'x': duplicate node id (first at line 3)
sdflow: error: 1 problem in duplicate_ids.xml
EOF
# A missing file is listed together with every other problem.
expect 3 many_problems.xml <<'EOF'
many_problems.xml:3: parameter 'seed': default: 'seven' is not an integer
many_problems.xml:5: node 'img' input 'image': input file 'missing.png' not found (searched: input)
many_problems.xml:8: node 'save' input 'images': type mismatch: output 'MASK' of node 'img' is MASK, the input is IMAGE
many_problems.xml:9: node 'save' input 'filename_prefx': unknown input of SaveImage (inputs: images, filename_prefix)
many_problems.xml:12: node 'n' input 'value': parameter 'seed': 'seven' is not an integer
many_problems.xml:14: node 'n': duplicate node id (first at line 11)
many_problems.xml:14: node 'n': unknown node type 'Bogus'
sdflow: error: 7 problems in many_problems.xml
EOF
expect 3 nope.xml <<'EOF'
sdflow: error: nope.xml: No such file or directory
EOF
expect 0 valid.xml </dev/null
if [ "$(cat out)" != "valid.xml: ok" ]; then echo "FAIL: valid.xml: stdout '$(cat out)'"; fails=$((fails + 1)); fi

# --set overrides are checked like defaults.
"$BIN" validate valid.xml --set n=x >out 2>err
if [ $? != 3 ] || [ "$(cat err)" != "sdflow: error: parameter 'n': 'x' is not an integer" ]; then
    echo "FAIL: --set n=x"; cat err; fails=$((fails + 1))
fi
"$BIN" validate valid.xml --set nope=1 >out 2>err
if [ $? != 3 ] || [ "$(cat err)" != "sdflow: error: no parameter 'nope'" ]; then
    echo "FAIL: --set nope=1"; cat err; fails=$((fails + 1))
fi
# Several files: each reported, the worst exit code wins.
"$BIN" validate valid.xml cycle.xml deep-missing.xml >out 2>err
rc=$?
if [ $rc != 3 ] || ! grep -q "^valid.xml: ok$" out || ! grep -q "cycle.xml:3: cycle" err ||
   ! grep -q "deep-missing.xml: No such file" err; then
    echo "FAIL: several files (exit $rc)"; fails=$((fails + 1))
fi

# A workflow over the 16 MiB limit is named with its size (a 200 MB file said "16777217 bytes");
# a stream whose size is unknown is only said to be over the limit.
truncate -s 200M huge.xml
"$BIN" validate huge.xml >out 2>err
if [ $? != 4 ] || [ "$(cat err)" != "huge.xml: file is 209715200 bytes, more than the 16 MiB limit for workflows" ]; then
    echo "FAIL: 200 MB file"; cat err; fails=$((fails + 1))
fi
rm huge.xml
head -c 17M /dev/zero | "$BIN" validate /dev/stdin >out 2>err
if [ $? != 4 ] || [ "$(cat err)" != "/dev/stdin: file is larger than the 16 MiB limit for workflows" ]; then
    echo "FAIL: 17 MB stream"; cat err; fails=$((fails + 1))
fi

# Usage.
"$BIN" validate >out 2>err
if [ $? != 2 ] || ! grep -q "no workflow file given" err; then echo "FAIL: no file"; fails=$((fails + 1)); fi
"$BIN" validate --bogus valid.xml >out 2>err
if [ $? != 2 ] || ! grep -q "unknown option '--bogus'" err; then echo "FAIL: bad option"; fails=$((fails + 1)); fi
"$BIN" validate --help >out 2>err
if [ $? != 0 ] || ! grep -q "usage: sdflow validate" out; then echo "FAIL: --help"; fails=$((fails + 1)); fi

if [ "$sums" != "$(md5sum ./*.xml)" ]; then echo "FAIL: an input file changed"; fails=$((fails + 1)); fi
finish validate.sh
