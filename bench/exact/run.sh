#!/usr/bin/env bash
# The exact softmax step (loss and backward, batch 32, 384-d) against a synthetic corpus
# table of N = 1k … 1M documents, each N in its own process, side by side with the same
# step in PyTorch (all B × N scores at once, logsumexp, autograd; OMP_NUM_THREADS = the
# cores, OMP_WAIT_POLICY=PASSIVE). Prints per N: seconds (median of REPEATS), GFLOP/s of
# the two table products (4 · batch · N · dim) beside the f32 GEMM peak measured in the
# same sieve process, peak RSS beyond the table, and torch/sieve (> 1: sieve faster).
# Time should grow linearly in N and sieve's memory stay the table plus a constant.
#
#   bench/exact/run.sh [SIZES="1000 10000 100000 1000000"] [REPEATS=3]
#
# Results: bench/exact/results/runs.jsonl (appended, with the CPU and its flags).
# The torch side needs .venv (scripts/setup-python.sh); without it only sieve runs.
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZES=${1:-"1000 10000 100000 1000000"}
REPEATS=${2:-3}
[ -n "${SKIP_BUILD:-}" ] || scripts/build.sh -q
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
FLAGS=$(grep -m1 '^flags' /proc/cpuinfo | grep -o 'avx512[a-z_0-9]*\|avx2\|fma\|amx[a-z_0-9]*' | sort -u | tr '\n' ' ')
RUN=target/bench-exact.jsonl
: > "$RUN"
TORCH=.venv/bin/python
[ -x "$TORCH" ] || { echo "no .venv: torch side skipped (scripts/setup-python.sh makes it)" >&2; TORCH=; }
for n in $SIZES; do
  target/release/examples/bench_exact "$n" 32 "$REPEATS" | sed 's/^{/{"impl":"sieve",/' >> "$RUN"
  [ -z "$TORCH" ] || OMP_NUM_THREADS=$(nproc) OMP_WAIT_POLICY=PASSIVE "$TORCH" bench/exact/torch_exact.py "$n" 32 "$REPEATS" >> "$RUN"
done
python3 - "$RUN" "$CPU" "$FLAGS" <<'PY'
import json, sys
run, cpu, flags = sys.argv[1:]
rows = [json.loads(l) for l in open(run)]
print(f"CPU: {cpu} ({flags.strip()})")
print(f"{'N':>9} {'impl':<20} {'step s':>9} {'ns/doc':>8} {'GFLOP/s':>8} {'of GEMM peak':>12} "
      f"{'RSS - table MiB':>15} {'torch/sieve':>11}")
with open("bench/exact/results/runs.jsonl", "a") as res:
    for n in sorted({r["n"] for r in rows}):
        group = [r for r in rows if r["n"] == n]
        sieve = next(r for r in group if r["impl"] == "sieve")
        for r in group:
            eff = r["gflops"] / sieve["gemm_peak_gflops"]
            ratio = "" if r is sieve else f"{r['seconds'] / sieve['seconds']:.2f}x"
            print(f"{n:>9} {r['impl']:<20} {r['seconds']:>9.4f} {r['seconds'] / n * 1e9:>8.1f} "
                  f"{r['gflops']:>8.1f} {eff:>11.0%} {r['peak_rss_mib'] - r['table_mib']:>15.0f} {ratio:>11}")
            r.update(cpu=cpu, flags=flags.strip(), gemm_peak_gflops=sieve["gemm_peak_gflops"])
            res.write(json.dumps(r) + "\n")
        print(f"{'':>9} GEMM peak (gemm crate, 2048^3, all threads): {sieve['gemm_peak_gflops']:.1f} GFLOP/s")
PY
