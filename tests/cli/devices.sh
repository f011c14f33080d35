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

# No OpenCL driver installed (an empty ICD vendor directory): a device error, exit 4, how to
# install PoCL.
mkdir "$T/icd"
OCL_ICD_VENDORS="$T/icd" run 4 devices
check "no platform message" grep -q "no OpenCL platform found" "$T/err"
check "install hint" grep -q "apt-get install pocl-opencl-icd" "$T/err"

# A device selector that matches nothing is a device error: exit 4 as the README's table says (it
# was 3), at the first node that needs the device.
cat >"$T/wf.xml" <<'EOF'
<workflow version="1">
  <node id="img" type="EmptyImage"><input name="width">8</input><input name="height">8</input></node>
  <node id="inv" type="ImageInvert"><input name="image" from="img" output="IMAGE"/></node>
</workflow>
EOF
run 4 run "$T/wf.xml" --no-cache --output inv --device 99
check "--device 99 message" grep -q "^sdflow: error: node 'inv' (ImageInvert): no OpenCL device matches '99' ([0-9]* devices\?; see 'sdflow devices')$" "$T/err"
SDFLOW_DEVICE=no-such-device run 4 run "$T/wf.xml" --no-cache --output inv
check "SDFLOW_DEVICE message" grep -q "no OpenCL device matches 'no-such-device'" "$T/err"

# SDFLOW_CPU_ROUTES takes opencl or host: another value is invalid input (exit 3), one line naming
# the variable, at the first node that needs the device.
SDFLOW_CPU_ROUTES=bad run 3 run "$T/wf.xml" --no-cache --output inv
check "SDFLOW_CPU_ROUTES message" grep -q "^sdflow: error: node 'inv' (ImageInvert): SDFLOW_CPU_ROUTES: 'bad' is not opencl or host$" "$T/err"
SDFLOW_CPU_ROUTES=opencl run 0 run "$T/wf.xml" --no-cache --output inv --output-dir "$T/o1"
SDFLOW_CPU_ROUTES=host run 0 run "$T/wf.xml" --no-cache --output inv --output-dir "$T/o2"

finish devices.sh
