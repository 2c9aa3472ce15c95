#!/usr/bin/env bash
# The CUDA build of the binary and of bench/gpu's example (`--features nccl`: cuda, and
# NCCL for `sieve train --distributed`), on any x86-64 machine: no GPU or driver needed.
# scripts/cuda-env.sh provides CUDA 13.0 from PyPI (cached in ~/.cache/sieve/cuda);
# candle-kernels' nvcc build takes ~8 minutes on two cores the first time. The binary
# loads libcuda/libcublas/... when it starts on a GPU (cudarc's dynamic loading; libnccl
# only under --distributed), so building links nothing from CUDA. CI runs this as its
# last step (it replaces target/release/sieve with the CUDA build).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/cuda-env.sh
exec cargo build --release --features nccl --bin sieve --example bench_gpu "$@"
