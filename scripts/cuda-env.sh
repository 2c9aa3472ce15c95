#!/usr/bin/env bash
# The CUDA 13.0 toolchain from PyPI wheels, for building `--features cuda` on a machine with
# no GPU, no driver and no CUDA install (checked recipe: ../shared/CUDA-BUILD.md).
#
#   source scripts/cuda-env.sh          # installs once into $SIEVE_CUDA, then exports PATH etc.
#   cargo build --release --features cuda
#
# Why these wheels: nvidia-cuda-nvcc 13.0 is the first with a complete nvcc (the cu12 wheel has
# only ptxas); nvcc needs the crt headers and nvvm's cicc; candle's build probes `nvcc --version`
# and compiles candle-kernels' PTX for CUDA_COMPUTE_CAP (90: H100/H200; no nvidia-smi to ask here).
# CUDA 13.0 matches the driver (580) of the GPU machine this project is lent: a newer toolkit's PTX
# may not load on it. Nothing is linked against the CUDA libraries but the static runtime: the
# vendored candle-core uses cudarc's dynamic loading, so the binary finds libcuda/libcublas/... at
# run time (LD_LIBRARY_PATH on the GPU machine, bench/gpu/README.md) and starts on machines with none.
# Idempotent: a second source is a no-op apart from the exports.
SIEVE_CUDA=${SIEVE_CUDA:-$HOME/.cache/sieve/cuda}
_sieve_cuda_pkgs=(
  nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
  nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cublas==13.0.2.14
  nvidia-cuda-nvrtc==13.0.88 nvidia-curand==10.4.0.35
)
_sieve_cuda_root="$SIEVE_CUDA/nvidia/cu13"
_sieve_cuda_stamp="$SIEVE_CUDA/.installed-$(printf '%s ' "${_sieve_cuda_pkgs[@]}" | sha256sum | cut -c1-12)"
if [ ! -e "$_sieve_cuda_stamp" ]; then
  echo "cuda-env: installing the CUDA 13.0 toolchain wheels into $SIEVE_CUDA" >&2
  python3 -m pip install -q --disable-pip-version-check --no-deps --upgrade \
    --target "$SIEVE_CUDA" "${_sieve_cuda_pkgs[@]}" 2>&1 | { grep -v "Running pip as the 'root' user" >&2 || true; }
  if [ ! -x "$_sieve_cuda_root/bin/nvcc" ]; then
    echo "cuda-env: $_sieve_cuda_root/bin/nvcc missing after the install" >&2
    return 1 2>/dev/null || exit 1
  fi
  touch "$_sieve_cuda_stamp"
fi
# candle-kernels links its MoE kernels with `-lcudart`, which would find no unversioned
# libcudart.so in the wheels and would make the binary need libcudart.so.13 to start at
# all. A linker script under that name links the static runtime instead (nvcc's own
# default), so nothing from CUDA is needed until a CUDA device is opened.
mkdir -p "$SIEVE_CUDA/link"
echo "INPUT($_sieve_cuda_root/lib/libcudart_static.a)" > "$SIEVE_CUDA/link/libcudart.so"
export LIBRARY_PATH="$SIEVE_CUDA/link${LIBRARY_PATH:+:$LIBRARY_PATH}"
export PATH="$_sieve_cuda_root/bin:$PATH"
export CUDA_ROOT="$_sieve_cuda_root" CUDA_PATH="$_sieve_cuda_root" CUDA_TOOLKIT_ROOT_DIR="$_sieve_cuda_root"
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
unset _sieve_cuda_pkgs _sieve_cuda_root _sieve_cuda_stamp
