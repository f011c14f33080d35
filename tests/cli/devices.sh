#!/bin/bash
# sdflow devices: lists the PoCL device with its properties; usage errors; no OpenCL platform at all.
. "$(dirname "$0")/lib.bash"

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

finish devices.sh
