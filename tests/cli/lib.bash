# The preamble the shell tests in tests/cli share. A test sources it first:
#     . "$(dirname "$0")/lib.bash"
# (it does not end in .sh, so tests/CMakeLists.txt does not register it as a test of its own).
#
# Needs the environment tests/CMakeLists.txt gives every test; an unset variable stops the script.
# Turns on `set -u` and sets:
#   BIN    the sdflow command ($SDFLOW_BIN)
#   SRC    the source tree ($SDFLOW_SOURCE_DIR)
#   BUILD  the build tree ($SDFLOW_BUILD_DIR)
#   MK     $BUILD/sdflow_mkckpt, the tiny random checkpoint writer
#   T      a new scratch directory, removed on exit (this file owns the EXIT trap)
#   fails  the failure count, 0
set -u
BIN=${SDFLOW_BIN:?}
SRC=${SDFLOW_SOURCE_DIR:?}
BUILD=${SDFLOW_BUILD_DIR:?}
MK=$BUILD/sdflow_mkckpt
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0

# fail MESSAGE...: prints "FAIL: MESSAGE" and counts one failure.
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# check DESCRIPTION COMMAND...: the command must succeed, else fail DESCRIPTION.
check() {
    local what=$1; shift
    if ! "$@"; then fail "$what"; fi
}

# run_bf16_or_skip TEST ARGS...: runs "$BIN" ARGS... (a first bf16 run) like `run 0`, but when the
# build or device cannot compute in bf16 (no oneDNN, not a CPU: exit 2) says TEST skipped and exits 0.
run_bf16_or_skip() {
    local name=$1; shift
    "$BIN" "$@" >"$T/out" 2>"$T/err"
    local got=$?
    if [ "$got" = 2 ] && grep -q "precision bf16: this build of sdflow has no oneDNN\|precision bf16 needs a CPU device" "$T/err"; then
        echo "$name: skipped (bf16 is unavailable here: $(tail -n 1 "$T/err"))"
        exit 0
    fi
    [ "$got" = 0 ] || fail "the bf16 run exited $got: $(cat "$T/err")"
}

# run EXPECTED_EXIT ARGS...: runs "$BIN" ARGS..., stdout in $T/out, stderr in $T/err. Another exit
# status is a failure that prints $T/err, preceded by $T/out when the test sets RUN_SHOW_STDOUT=1.
RUN_SHOW_STDOUT=0
run() {
    local want=$1; shift
    "$BIN" "$@" >"$T/out" 2>"$T/err"
    local got=$?
    if [ "$got" != "$want" ]; then
        echo "FAIL: sdflow $* exited $got, expected $want"
        if [ "$RUN_SHOW_STDOUT" = 1 ]; then cat "$T/out"; fi
        cat "$T/err"; fails=$((fails + 1))
    fi
}

# idat PNG: prints the PNG's first IDAT chunk (type and data): its pixels, for comparing images
# whose text chunks (each graph's own workflow and provenance) differ.
idat() {
    local at len
    at=$(grep -obUa IDAT "$1" | head -n 1 | cut -d: -f1)
    len=$(od -An -tu1 -j $((at - 4)) -N 4 "$1" | awk '{print (($1 * 256 + $2) * 256 + $3) * 256 + $4}')
    tail -c +$((at + 1)) "$1" | head -c $((len + 4))
}

# finish NAME: the last line of a test: prints "NAME: ok" or "NAME: N failed", exits 0 or 1.
finish() {
    if [ "$fails" = 0 ]; then echo "$1: ok"; else echo "$1: $fails failed"; fi
    exit $((fails > 0))
}
