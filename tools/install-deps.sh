#!/bin/sh
# Installs sdflow's build and run dependencies from Debian 12's packages (run as root).
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    build-essential cmake pkg-config \
    libxml2-dev libsqlite3-dev libpng-dev liblua5.4-dev lua5.4 libjansson-dev libb2-dev libssl-dev zlib1g-dev \
    ocl-icd-opencl-dev opencl-headers pocl-opencl-icd clinfo \
    libopenblas-dev libcivetweb-dev libhiredis-dev libdnnl-dev libprotobuf-c-dev protobuf-c-compiler libonnx-dev \
    redis-server curl >/dev/null
