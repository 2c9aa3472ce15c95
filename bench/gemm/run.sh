#!/usr/bin/env bash
# The encoder's matrix products alone, side by side in one run: the `gemm` crate as
# sieve calls it (bench_gemm.rs) against PyTorch's BLAS (MKL/oneDNN in the PyPI wheel,
# OMP_NUM_THREADS=cores, OMP_WAIT_POLICY=PASSIVE) and numpy's OpenBLAS, on the 12
# shapes of one all-MiniLM-L6-v2 training step at 32 × 128 (forward, dx, dW of the four
# linear layers). Prints GFLOP/s per shape, the ratio peer/sieve (> 1: the BLAS is
# faster), and a FLOP-weighted total; appends to bench/gemm/results/runs.jsonl with the
# CPU and its flags. The question it answers: would linking a BLAS speed the step up.
# Then one linear layer's backward (dx and dW on fresh operands) the ways it can use the
# cores (BENCH_GEMM_LAYERS=1 bench_gemm: joined, sequential, gemm-split, ksplit), appended
# to the same file as an "event": "layers" record.
#
#   bench/gemm/run.sh [REPEATS=7]
set -euo pipefail
cd "$(dirname "$0")/../.."
REPEATS=${1:-7}
THREADS=$(nproc)
[ -x .venv/bin/python ] || scripts/setup-python.sh >&2
VENV=${SIEVE_DENSE_VENV:-target/bench-dense/venv}
if ! "$VENV/bin/python" -c "import numpy, threadpoolctl" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet numpy threadpoolctl
fi
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet --example bench_gemm
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
FLAGS=$(grep -m1 '^flags' /proc/cpuinfo | grep -o 'avx512[a-z_0-9]*\|avx2\|fma\|amx[a-z_0-9]*' | sort -u | tr '\n' ' ')
RUN=$(mktemp)
target/release/examples/bench_gemm --repeats "$REPEATS" >> "$RUN"
OMP_NUM_THREADS=$THREADS OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/gemm/peers.py torch "$REPEATS" >> "$RUN"
env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$VENV/bin/python" bench/gemm/peers.py numpy "$REPEATS" >> "$RUN"
mkdir -p bench/gemm/results
python3 - "$RUN" "$CPU" "$FLAGS" <<'PY'
import json, sys, datetime
run, cpu, flags = sys.argv[1:]
rows = [json.loads(l) for l in open(run) if l.strip()]
by = {}
for r in rows:
    by.setdefault(r["shape"], {})[r["impl"]] = r
libs = {r["impl"]: r.get("lib", "gemm crate") for r in rows}
print(f"CPU: {cpu} ({flags.strip()}); {libs.get('torch')}; {libs.get('numpy')}")
print(f"{'shape':<30} {'sieve split':>11} {'rayon':>7} {'torch':>7} {'numpy':>7} {'torch/sieve':>11} {'numpy/sieve':>11}")
tot = {"sieve gemm": 0.0, "torch": 0.0, "numpy": 0.0}
for shape, d in by.items():
    s = d["sieve gemm"]
    flop = 2.0 * s["m"] * s["n"] * s["k"]
    for impl in tot:
        tot[impl] += flop / (d[impl]["gflops"] * 1e9)
    print(f"{shape:<30} {s['split_gflops']:>11.1f} {s['rayon_gflops']:>7.1f} {d['torch']['gflops']:>7.1f} "
          f"{d['numpy']['gflops']:>7.1f} {d['torch']['gflops'] / s['gflops']:>10.2f}x {d['numpy']['gflops'] / s['gflops']:>10.2f}x")
print(f"all 12 products, seconds: sieve {tot['sieve gemm']:.3f}, torch {tot['torch']:.3f}, numpy {tot['numpy']:.3f}: "
      f"torch/sieve time {tot['torch'] / tot['sieve gemm']:.2f}, numpy/sieve {tot['numpy'] / tot['sieve gemm']:.2f} (< 1: the BLAS is faster)")
print(f"gemm 2048^3 peak in the run: {rows[0]['gemm_peak_gflops']:.1f} GFLOP/s")
with open("bench/gemm/results/runs.jsonl", "a") as f:
    f.write(json.dumps({"date": datetime.date.today().isoformat(), "cpu": cpu, "flags": flags.strip(),
                        "rows": rows, "seconds": tot}) + "\n")
PY
LAYERS=$(BENCH_GEMM_LAYERS=1 target/release/examples/bench_gemm --repeats "$REPEATS")
python3 - "$CPU" "$FLAGS" "$REPEATS" "$LAYERS" <<'PY'
import json, sys, datetime
cpu, flags, repeats, layers = sys.argv[1:]
rows = [json.loads(l) for l in layers.splitlines() if l.strip()]
print("one layer's backward, GFLOP/s (median of", repeats, "):")
for r in rows:
    print(f"  {r['layer']:<4} joined {r['joined_gflops']:6.1f}  sequential {r['sequential_gflops']:6.1f}  "
          f"gemm-split {r['gemm_split_gflops']:6.1f}  ksplit {r['ksplit_gflops']:6.1f}")
with open("bench/gemm/results/runs.jsonl", "a") as f:
    f.write(json.dumps({"date": datetime.date.today().isoformat(), "event": "layers", "cpu": cpu,
                        "flags": flags.strip(), "command": f"bench/gemm/run.sh {repeats}",
                        "rows": rows}) + "\n")
PY
rm -f "$RUN"
