#!/bin/bash
# sdflow devices: lists the PoCL device with its properties; usage errors; no OpenCL platform at all.
set -u
BIN=${SDFLOW_BIN:?}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fails=0
check() { # check DESCRIPTION COMMAND...: the command must succeed
    local what=$1; shift
    if ! "$@"; then echo "FAIL: $what"; fails=$((fails + 1)); fi
}
run() { # run EXPECTED_EXIT ARGS...: stdout in $T/out, stderr in $T/err
    local want=$1; shift
    "$BIN" "$@" >"$T/out" 2>"$T/err"
    local got=$?
    if [ "$got" != "$want" ]; then
        echo "FAIL: sdflow $* exited $got, expected $want"; cat "$T/err"; fails=$((fails + 1))
    fi
}

run 0 devices
check "platform line" grep -q "^platform: " "$T/out"
check "default device marked" grep -q "^\* 0: " "$T/out"
check "type and driver" grep -q "type CPU, driver " "$T/out"
check "memory and features" grep -Eq "memory [0-9.]+ GiB, max allocation [0-9.]+ GiB, fp16 (yes|no), fp64 (yes|no), subgroups (yes|no)" "$T/out"

run 0 devices --help
check "help" grep -q "usage: sdflow devices" "$T/out"

run 2 devices extra
check "unexpected argument" grep -q "sdflow devices: unexpected argument 'extra'" "$T/err"

# No OpenCL driver installed (an empty ICD vendor directory): exit 3, how to install PoCL.
mkdir "$T/icd"
OCL_ICD_VENDORS="$T/icd" run 3 devices
check "no platform message" grep -q "no OpenCL platform found" "$T/err"
check "install hint" grep -q "apt-get install pocl-opencl-icd" "$T/err"

if [ "$fails" -ne 0 ]; then echo "devices.sh: $fails failed"; exit 1; fi
echo "devices.sh: ok"
