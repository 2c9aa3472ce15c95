#!/usr/bin/env bash
# Dense search, side by side in one run, on synthetic clustered 384-d unit vectors
# (bench/hnsw/make_data.py) with NQ queries:
#  - exact top-K: sieve's `exact_top_k` (the miner's and `sieve eval`'s exact path)
#    against faiss IndexFlatIP and numpy (blocked matmul + argpartition). Each runs in
#    its own process on all cores; sieve's run also measures the machine's f32 GEMM
#    peak, so the efficiency is against this machine now. Seconds (median of REPEATS),
#    GFLOP/s, peak RSS, the ratio peer/sieve (> 1: sieve faster) and how often the
#    top-10 ids agree with faiss.
#  - HNSW at the sizes in HNSW_SIZES (default 100000; a 1M graph takes ~35 min to
#    build): sieve (hnsw_rs) against hnswlib, same M 16 / ef_construction 200, build
#    seconds, queries/s at recall@10 >= 0.98 over the same NQ queries, peak RSS.
#  - `--dense auto`: what the miner chooses at each size, the time of that path
#    (exact: the search; HNSW: build + search at recall 0.98) against the better of
#    the two. Where HNSW was not run at a size, its path is bounded below by
#    (size / 100k) x the 100k build (insertion cost only grows with the graph).
#
#   bench/dense/run.sh [SIZES="100000 1000000"] [NQ=10000] [K=100] [REPEATS=3]
#   env: HNSW_SIZES ("100000"; "" skips HNSW), EFS (ef_search sweep),
#        LARGE_REPEATS (REPEATS; the repeats at sizes of 1M and more, where faiss and
#        numpy take minutes a run)
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
HNSW_SIZES=${HNSW_SIZES-100000}
EFS=${EFS:-16,24,32,48,64,96,128,192,256}
if [ -n "$HNSW_SIZES" ] && ! "$VENV/bin/python" -c "import hnswlib" 2>/dev/null; then
  command -v c++ >/dev/null || { echo "run.sh: hnswlib builds from source and needs a C++ compiler (c++)" >&2; exit 1; }
  "$VENV/bin/python" -m pip install --quiet hnswlib
fi
[ -x /usr/bin/time ] || { echo "run.sh: needs GNU time (/usr/bin/time, Debian package 'time') for the HNSW rows' peak memory" >&2; exit 1; }
# One JSON line per HNSW event of either library, then its peak RSS (GNU time, KiB).
hnsw_pair() { # n corpus queries
  local rss
  rss=$(mktemp)
  /usr/bin/time -f '%M' -o "$rss" target/release/examples/bench_hnsw --corpus "$2" --queries "$3" \
    --ef "$EFS" --k 10 --min-seconds 1 --label "synth-$1" >> "$RUN.hnsw"
  echo "{\"lib\": \"sieve-hnsw_rs\", \"event\": \"rss\", \"n\": $1, \"peak_rss_kib\": $(tail -1 "$rss")}" >> "$RUN.hnsw"
  /usr/bin/time -f '%M' -o "$rss" "$VENV/bin/python" bench/hnsw/hnswlib_bench.py --corpus "$2" --queries "$3" \
    --ef "$EFS" --k 10 --min-seconds 1 --threads "$(nproc)" --label "synth-$1" >> "$RUN.hnsw"
  echo "{\"lib\": \"hnswlib\", \"event\": \"rss\", \"n\": $1, \"peak_rss_kib\": $(tail -1 "$rss")}" >> "$RUN.hnsw"
  rm -f "$rss"
}
: > "$RUN.hnsw"
for n in $SIZES; do
  reps=$REPEATS
  if [ "$n" -ge 1000000 ]; then reps=${LARGE_REPEATS:-$REPEATS}; fi
  data=$OUT/synth-$n-$NQ
  if [ ! -f "$data.queries.npy" ]; then
    "$VENV/bin/python" bench/hnsw/make_data.py "$n" "$data.corpus.npy" "$data.queries.npy" --nq "$NQ"
  fi
  target/release/examples/bench_dense --corpus "$data.corpus.npy" --queries "$data.queries.npy" \
    --k "$K" --repeats "$reps" --ids-out "$OUT/ids-sieve-$n.bin" >> "$RUN"
  "$VENV/bin/python" bench/dense/peers.py faiss "$data.corpus.npy" "$data.queries.npy" "$K" "$reps" "$OUT/ids-faiss-$n.bin" >> "$RUN"
  env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE "$VENV/bin/python" bench/dense/peers.py numpy \
    "$data.corpus.npy" "$data.queries.npy" "$K" "$reps" "$OUT/ids-numpy-$n.bin" >> "$RUN"
  if [[ " $HNSW_SIZES " == *" $n "* ]]; then
    hnsw_pair "$n" "$data.corpus.npy" "$data.queries.npy"
  fi
done
"$VENV/bin/python" - "$RUN" "$OUT" "$CPU" "$FLAGS" <<'PY'
import json, math, sys
import numpy as np
run, out, cpu, flags = sys.argv[1:]
TARGET = 0.98
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

    # HNSW: build, then queries/s where recall@10 first reaches TARGET (log-linear
    # interpolation between the two ef values around it), per library and size.
    events = [json.loads(l) for l in open(run + ".hnsw") if l.strip()]
    hnsw = {}  # (lib, n) -> dict
    for e in events:
        lib = e.get("lib")
        if lib not in ("sieve-hnsw_rs", "hnswlib"):
            continue
        n = e.get("n") or int(str(e.get("label", "synth-0")).split("-")[-1])
        h = hnsw.setdefault((lib, n), {"points": []})
        if e.get("event") == "build":
            h["build_s"] = e["build_s"]
        elif e.get("event") == "search":
            h["points"].append(e)
        elif e.get("event") == "rss":
            h["peak_rss_mib"] = e["peak_rss_kib"] / 1024
    for h in hnsw.values():
        pts = sorted(h["points"], key=lambda p: p["ef_search"])
        prev = None
        for p in pts:
            if p["recall"] >= TARGET:
                if prev is None or p["recall"] == prev["recall"]:
                    q = p["qps"]
                else:
                    w = (TARGET - prev["recall"]) / (p["recall"] - prev["recall"])
                    q = math.exp(math.log(prev["qps"]) + w * (math.log(p["qps"]) - math.log(prev["qps"])))
                h.update(ef=p["ef_search"], qps=q)
                break
            prev = p
        h["best_recall"] = max((p["recall"] for p in pts), default=float("nan"))
    if hnsw:
        print(f"\nHNSW (M 16, ef_construction 200), recall@10 >= {TARGET} over the same queries")
        print(f"{'N':>9} {'impl':<14} {'build s':>8} {'ef':>5} {'q/s':>9} {'RSS MiB':>8} {'hnswlib/sieve build':>20} {'sieve/hnswlib q/s':>18}")
        for n in sorted({n for _, n in hnsw}):
            s_, h_ = hnsw.get(("sieve-hnsw_rs", n), {}), hnsw.get(("hnswlib", n), {})
            for name, h in (("sieve hnsw_rs", s_), ("hnswlib", h_)):
                qps = f"{h['qps']:.0f}" if "qps" in h else f"<{TARGET} ({h.get('best_recall', float('nan')):.3f})"
                extra = ""
                if name == "hnswlib" and s_.get("build_s") and h_.get("build_s"):
                    extra = f"{h_['build_s'] / s_['build_s']:>20.2f}x"
                    if "qps" in s_ and "qps" in h_:
                        extra += f"{s_['qps'] / h_['qps']:>17.2f}x"
                print(f"{n:>9} {name:<14} {h.get('build_s', float('nan')):>8.1f} {h.get('ef', ''):>5} {qps:>9} {h.get('peak_rss_mib', float('nan')):>8.0f} {extra}")
                res.write(json.dumps({"impl": name, "n": n, "nq": sieve["nq"], "event": "hnsw", "build_s": h.get("build_s"),
                                      "ef_at_target": h.get("ef"), "qps_at_target": h.get("qps"), "target_recall": TARGET,
                                      "peak_rss_mib": h.get("peak_rss_mib"), "cpu": cpu, "flags": flags.strip(),
                                      "sweep": [(p["ef_search"], p["recall"], p["qps"]) for p in h.get("points", [])]}) + "\n")

    # --dense auto against the better of the two paths, per size.
    print("\n--dense auto: the chosen path's time against the better path's (target: within 10%)")
    base = hnsw.get(("sieve-hnsw_rs", 100000), {}).get("build_s")
    for n in sorted({r["n"] for r in rows}):
        sieve = next(r for r in rows if r["n"] == n and r["impl"].startswith("sieve"))
        exact_s = sieve["seconds"]
        h = hnsw.get(("sieve-hnsw_rs", n), {})
        if "build_s" in h and "qps" in h:
            hnsw_s, how = h["build_s"] + sieve["nq"] / h["qps"], "measured"
        elif base:
            hnsw_s, how = base * n / 100000, f"lower bound: {n // 100000} x the 100k build"
        else:
            hnsw_s, how = None, "not measured"
        chosen = exact_s if sieve["auto"] == "exact" else hnsw_s
        best = min(x for x in (exact_s, hnsw_s) if x is not None)
        verdict = "unknown" if chosen is None else ("yes" if chosen <= 1.10 * best else "NO")
        hs = "n/a" if hnsw_s is None else f"{hnsw_s:.1f} s"
        print(f"{n:>9} auto -> {sieve['auto']:<5} exact {exact_s:.1f} s, HNSW {hs} ({how}); within 10% of the better: {verdict}")
        print(f"{'':>9} ({sieve['auto_why']})")
        res.write(json.dumps({"event": "auto", "n": n, "nq": sieve["nq"], "auto": sieve["auto"], "exact_s": exact_s,
                              "hnsw_s": hnsw_s, "hnsw_how": how, "within_10pct": verdict, "cpu": cpu}) + "\n")
PY
