#!/bin/bash
# sdflow save: read -> write -> read is lossless, --set changes defaults, --resolve inlines
# parameters, failures write nothing.
. "$(dirname "$0")/lib.bash"
cd "$T" || exit 1
cp "$SRC"/tests/data/xml/valid.xml .

"$BIN" save valid.xml -o a.xml 2>err || fail "save: $(cat err)"
"$BIN" save a.xml -o b.xml 2>err || fail "save again: $(cat err)"
cmp -s a.xml b.xml || fail "second save differs from the first"
"$BIN" validate a.xml >/dev/null 2>&1 || fail "saved file does not validate"
grep -q '<param name="prompt" type="STRING" default="a cat &amp; a &quot;dog&quot;">the prompt</param>' a.xml ||
    fail "escaped parameter default"
[ "$(stat -c %a a.xml)" = 644 ] || fail "mode of a new file is $(stat -c %a a.xml)"

# --set writes the new default; other parameters keep theirs.
"$BIN" save valid.xml -o c.xml --set n=7 --set 'prompt=x
y' 2>err || fail "save --set: $(cat err)"
grep -q '<param name="n" type="INT" default="7">how many</param>' c.xml || fail "--set n=7"
grep -q 'default="x&#10;y"' c.xml || fail "--set with a newline"

# --resolve replaces parameters by literals.
"$BIN" save valid.xml -o - --resolve --set n=9 >d.xml 2>err || fail "save --resolve: $(cat err)"
grep -q '<param' d.xml && fail "--resolve left parameters"
grep -q '<input name="value">9</input>' d.xml || fail "--resolve literal"
"$BIN" validate d.xml >/dev/null 2>&1 || fail "resolved file does not validate"

# Saving over the input file itself.
cp valid.xml same.xml
"$BIN" save same.xml -o same.xml --set n=5 2>err || fail "in-place save: $(cat err)"
grep -q 'default="5"' same.xml || fail "in-place save content"
[ "$(ls | grep -c tmp)" = 0 ] || fail "temporary files left: $(ls)"

# Failures: exact message and exit code, nothing written.
"$BIN" save valid.xml -o e.xml --set n=x >out 2>err
[ $? = 3 ] || fail "bad --set value exit code"
[ "$(cat err)" = "sdflow: error: parameter 'n': 'x' is not an integer" ] || fail "bad --set value: $(cat err)"
[ -e e.xml ] && fail "e.xml written after a failure"
"$BIN" save "$SRC"/tests/data/xml/malformed.xml -o e.xml >out 2>err
[ $? = 3 ] || fail "malformed exit code"
grep -q "malformed.xml:4: malformed XML: Opening and ending tag mismatch" err || fail "malformed message"
[ -e e.xml ] && fail "e.xml written after a parse failure"
"$BIN" save valid.xml -o missing-dir/e.xml >out 2>err
[ $? = 5 ] || fail "missing directory exit code"
grep -q "missing-dir/e.xml: cannot create a temporary file: No such file or directory" err ||
    fail "missing directory message: $(cat err)"
"$BIN" save valid.xml >out 2>err
[ $? = 2 ] || fail "no -o exit code"
grep -q "no output file given" err || fail "no -o message"
"$BIN" save --help >out 2>&1 || fail "--help"
grep -q "usage: sdflow save" out || fail "--help text"

finish save.sh
