#!/usr/bin/env bash
# Create <repo>/.venv with what the Python reference scripts and benchmarks need:
# sentence-transformers, a CPU-only torch, numpy, safetensors, pytrec-eval-terrier.
#
# CPU torch from PyPI: the Linux x86_64 torch wheel on PyPI declares dependencies
# on multi-GB nvidia-*/cuda-*/triton packages, and only PyPI is reachable here (no
# download.pytorch.org CPU wheels).  We resolve the full dependency set with
# `pip install --dry-run --report`, install everything except the GPU-only packages
# pinned with --no-deps, and check `import torch`.  With torch 2.15.0 (cu132 build)
# that import FAILS ("libcublasLt.so.*[0-9] not found": libtorch links the CUDA
# libraries even when no GPU is used), so the script then installs the GPU-only
# packages too (~4.5 GB extra, venv ~5.8 GB, ~1 min at registry speed).  torch then
# runs on CPU (torch.cuda.is_available() is False).  Should a future torch import
# without them, the venv stays slim automatically.
# Idempotent: re-running is a no-op once the venv imports everything.
# Env: PYTHON (default python3), SIEVE_VENV (default <repo>/.venv).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SIEVE_VENV:-$REPO_ROOT/.venv}"
PY="${PYTHON:-python3}"
PKGS=(sentence-transformers torch numpy safetensors pytrec-eval-terrier)

check() {
  "$VENV/bin/python" - <<'PY' 2>/dev/null
import torch, numpy, safetensors, pytrec_eval, sentence_transformers
torch.ones(2) @ torch.ones(2)
print(f"torch {torch.__version__}, sentence-transformers {sentence_transformers.__version__}, numpy {numpy.__version__}")
PY
}

if [[ -x "$VENV/bin/python" ]] && check; then
  echo "setup-python: $VENV already complete"
  exit 0
fi

[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
"$VENV/bin/python" -m pip install --quiet --dry-run --ignore-installed \
  --report "$TMP/report.json" "${PKGS[@]}"

"$VENV/bin/python" - "$TMP/report.json" "$TMP/reqs.txt" "$TMP/gpu.txt" <<'PY'
import json, re, sys
GPU = re.compile(r"^(nvidia[-_].*|cuda[-_].*|triton)$", re.I)
with open(sys.argv[2], "w") as cpu, open(sys.argv[3], "w") as gpu:
    for item in json.load(open(sys.argv[1]))["install"]:
        name, ver = item["metadata"]["name"], item["metadata"]["version"]
        print(f"{name}=={ver}", file=gpu if GPU.match(name) else cpu)
PY

"$VENV/bin/python" -m pip install --quiet --no-deps -r "$TMP/reqs.txt"
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  echo "setup-python: torch does not import without its CUDA libraries; installing them (CPU use only)"
  "$VENV/bin/python" -m pip install --quiet --no-deps -r "$TMP/gpu.txt"
fi
check || { echo "setup-python: ERROR imports failed in $VENV" >&2; exit 1; }
echo "setup-python: done ($VENV)"
