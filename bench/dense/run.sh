#!/usr/bin/env bash
# Exact dense top-k, side by side in one run: sieve's `exact_top_k` (the miner's and
# `sieve eval`'s exact path) against faiss IndexFlatIP and numpy (blocked matmul +
# argpartition), on synthetic clustered 384-d unit vectors (bench/hnsw/make_data.py),
# NQ queries, top-K. Each implementation runs in its own process on all cores; sieve's
# run also measures the machine's f32 GEMM peak, so the efficiency is against this
# machine now. Prints seconds (median of REPEATS), GFLOP/s, peak RSS, the ratio
# peer/sieve (> 1: sieve faster) and how often the top-10 ids agree with faiss.
#
#   bench/dense/run.sh [SIZES="100000 1000000"] [NQ=10000] [K=100] [REPEATS=3]
#
# Results: bench/dense/results/runs.jsonl (appended, with the CPU and its flags).
# numpy runs with OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset (see the environment notes:
# they slow a current OpenBLAS); the kernel it then uses is printed in its row.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
SIZES=${1:-"100000 1000000"}
NQ=${2:-10000}
K=${3:-100}
REPEATS=${4:-3}
OUT=target/bench-dense
VENV=${SIEVE_DENSE_VENV:-$OUT/venv}
mkdir -p "$OUT"
if ! "$VENV/bin/python" -c "import faiss, numpy, threadpoolctl" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet numpy faiss-cpu threadpoolctl
fi
[ -n "${SKIP_BUILD:-}" ] || scripts/build.sh -q
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
FLAGS=$(grep -m1 '^flags' /proc/cpuinfo | grep -o 'avx512[a-z_0-9]*\|avx2\|fma\|amx[a-z_0-9]*' | sort -u | tr '\n' ' ')
RUN=$OUT/run-$(date +%s).jsonl
for n in $SIZES; do
  data=$OUT/synth-$n-$NQ
  if [ ! -f "$data.queries.npy" ]; then
    "$VENV/bin/python" bench/hnsw/make_data.py "$n" "$data.corpus.npy" "$data.queries.npy" --nq "$NQ"
  fi
  target/release/examples/bench_dense --corpus "$data.corpus.npy" --queries "$data.queries.npy" \
    --k "$K" --repeats "$REPEATS" --ids-out "$OUT/ids-sieve-$n.bin" >> "$RUN"
  "$VENV/bin/python" bench/dense/peers.py faiss "$data.corpus.npy" "$data.queries.npy" "$K" "$REPEATS" "$OUT/ids-faiss-$n.bin" >> "$RUN"
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$VENV/bin/python" bench/dense/peers.py numpy \
    "$data.corpus.npy" "$data.queries.npy" "$K" "$REPEATS" "$OUT/ids-numpy-$n.bin" >> "$RUN"
done
"$VENV/bin/python" - "$RUN" "$OUT" "$CPU" "$FLAGS" <<'PY'
import json, sys
import numpy as np
run, out, cpu, flags = sys.argv[1:]
rows = [json.loads(l) for l in open(run)]
print(f"CPU: {cpu} ({flags.strip()})")
print(f"{'N':>9} {'impl':<18} {'s':>8} {'GFLOP/s':>8} {'of GEMM peak':>12} {'RSS MiB':>8} {'peer/sieve':>10} {'top-10 = faiss':>14}")
with open("bench/dense/results/runs.jsonl", "a") as res:
    for n in sorted({r["n"] for r in rows}):
        group = [r for r in rows if r["n"] == n]
        sieve = next(r for r in group if r["impl"].startswith("sieve"))
        k = sieve["k"]
        ref = np.fromfile(f"{out}/ids-faiss-{n}.bin", dtype=np.int64).reshape(-1, k)[:, :10]
        for r in group:
            name = "sieve" if r["impl"].startswith("sieve") else r["impl"]
            ids = np.fromfile(f"{out}/ids-{name}-{n}.bin", dtype=np.int64).reshape(-1, k)[:, :10]
            agree = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, ref)])
            eff = r["gflops"] / sieve["gemm_peak_gflops"]
            ratio = r["seconds"] / sieve["seconds"]
            print(f"{n:>9} {name:<18} {r['seconds']:>8.2f} {r['gflops']:>8.1f} {eff:>11.0%} {r['peak_rss_mib']:>8.0f} "
                  f"{'' if name == 'sieve' else f'{ratio:.2f}x':>10} {agree:>14.4f}")
            r.update(cpu=cpu, flags=flags.strip(), gemm_peak_gflops=sieve["gemm_peak_gflops"], top10_agreement_with_faiss=agree)
            res.write(json.dumps(r) + "\n")
        print(f"{'':>9} GEMM peak (gemm crate, 2048^3, all threads): {sieve['gemm_peak_gflops']:.1f} GFLOP/s")
PY
