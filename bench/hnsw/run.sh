#!/usr/bin/env bash
# HNSW: sieve (hnsw_rs, crates/index/src/hnsw.rs) against hnswlib, same data, same
# M / ef_construction, all cores for both.  For each library it sweeps ef_search and
# reports the build time and the queries/s where recall@10 (vs exact search) first
# reaches TARGET, side by side, with ratios sieve/hnswlib (>1: sieve faster).
#
#   bench/hnsw/run.sh [N]          N synthetic 384-d vectors (default 1000000)
#
# Env: M (16), EFC (200), EFS (ef_search sweep), K (10), TARGET (0.98),
#      DATASETS ("scifact synth"), NQ (1000 synthetic queries), MIN_SECONDS (1),
#      SIEVE_VENV (<repo>/.venv), OUT (target/bench-hnsw), SKIP_BUILD (use the built example).
# Data is cached under $OUT: SciFact embeddings (sieve encode, ~5 min on 2 cores) and
# the synthetic set (bench/hnsw/make_data.py).  Results: $OUT/<label>.jsonl (raw) and
# $OUT/results.txt (appended summaries).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
N="${1:-1000000}"
M="${M:-16}"
EFC="${EFC:-200}"
EFS="${EFS:-10,16,24,32,48,64,96,128,192,256,384,512}"
K="${K:-10}"
TARGET="${TARGET:-0.98}"
DATASETS="${DATASETS:-scifact synth}"
NQ="${NQ:-1000}"
MIN_SECONDS="${MIN_SECONDS:-1}"
VENV="${SIEVE_VENV:-$REPO/.venv}"
OUT="${OUT:-$REPO/target/bench-hnsw}"
SCIFACT="${SCIFACT:-$REPO/../shared/data/scifact}"
MODEL="${MODEL:-models/all-MiniLM-L6-v2}"
mkdir -p "$OUT"

# --- Python side: numpy + hnswlib (hnswlib 0.8.0 ships only an sdist: it compiles
# with the system C++ compiler, -march=native, pybind11 fetched by pip).
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
if ! "$VENV/bin/python" -c 'import numpy, hnswlib' 2>/dev/null; then
  command -v c++ >/dev/null || { echo "run.sh: hnswlib builds from source and needs a C++ compiler (c++)" >&2; exit 1; }
  "$VENV/bin/python" -m pip install --quiet numpy hnswlib
fi
PY="$VENV/bin/python"

# --- Rust side.
[[ -n "${SKIP_BUILD:-}" ]] || scripts/build.sh -q
BENCH="$REPO/target/release/examples/bench_hnsw"

encode() { # input output
  if [[ ! -s "$2" ]]; then
    [[ -x target/release/sieve ]] || scripts/build.sh -q
    [[ -d "$MODEL" ]] || scripts/fetch-model.sh
    echo "encoding $1 -> $2" >&2
    target/release/sieve encode --model "$MODEL" --input "$1" --output "$2.tmp.npy" --quiet
    mv "$2.tmp.npy" "$2"
  fi
}

run_pair() { # label corpus.npy queries.npy
  local label="$1" corpus="$2" queries="$3" log="$OUT/$1.jsonl"
  : >"$log"
  echo "== $label: sieve (hnsw_rs)" >&2
  "$BENCH" --corpus "$corpus" --queries "$queries" --m "$M" --ef-construction "$EFC" \
    --ef "$EFS" --k "$K" --min-seconds "$MIN_SECONDS" --label "$label" | tee -a "$log"
  echo "== $label: hnswlib" >&2
  "$PY" bench/hnsw/hnswlib_bench.py --corpus "$corpus" --queries "$queries" --m "$M" \
    --ef-construction "$EFC" --ef "$EFS" --k "$K" --min-seconds "$MIN_SECONDS" \
    --threads "$(nproc)" --label "$label" | tee -a "$log"
  summarize "$log" | tee -a "$OUT/results.txt"
}

summarize() { # log.jsonl
  "$PY" - "$1" "$TARGET" "$K" <<'PY'
import json, math, sys, datetime
path, target, k = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
rows = [json.loads(l) for l in open(path) if l.strip()]
libs = {"sieve": "sieve-hnsw_rs", "hnswlib": "hnswlib"}
build, points = {}, {}
for r in rows:
    for short, lib in libs.items():
        if r.get("lib") == lib and r.get("event") == "build":
            build[short] = r
        if r.get("lib") == lib and r.get("event") == "search":
            points.setdefault(short, []).append(r)

def operating_point(pts):
    pts = sorted(pts, key=lambda p: p["ef_search"])
    prev = None
    for p in pts:
        if p["recall"] >= target:
            # qps interpolated (log-linear in recall) to exactly the target recall
            if prev is None or p["recall"] == prev["recall"]:
                q = p["qps"]
            else:
                w = (target - prev["recall"]) / (p["recall"] - prev["recall"])
                q = math.exp(math.log(prev["qps"]) + w * (math.log(p["qps"]) - math.log(prev["qps"])))
            return p, q
        prev = p
    return None, None

b = build.get("sieve", {})
lines = [f"# {datetime.datetime.now():%Y-%m-%d %H:%M}  {rows[0].get('label','')}: n={b.get('n')} dim={b.get('dim')} "
         f"M={b.get('m')} ef_construction={b.get('ef_construction')} threads={b.get('threads')} "
         f"target recall@{k} >= {target}"]
lines.append(f"{'':10} {'build_s':>9} {'ef':>5} {'recall':>8} {'qps@ef':>10} {'qps@target':>11}")
res = {}
for short in libs:
    p, q = operating_point(points.get(short, []))
    bs = build.get(short, {}).get("build_s")
    res[short] = (bs, p, q)
    if p is None:
        best = max((x["recall"] for x in points.get(short, [])), default=float("nan"))
        lines.append(f"{short:10} {bs!s:>9}  target not reached (best recall {best:.4f})")
    else:
        lines.append(f"{short:10} {bs:9.2f} {p['ef_search']:5d} {p['recall']:8.4f} {p['qps']:10.1f} {q:11.1f}")
(sb, sp, sq), (hb, hp, hq) = res["sieve"], res["hnswlib"]
if sb and hb:
    lines.append(f"build speed sieve/hnswlib (hnswlib_s / sieve_s): {hb / sb:.3f}")
if sp and hp:
    lines.append(f"qps at target sieve/hnswlib: {sq / hq:.3f} (interpolated), {sp['qps'] / hp['qps']:.3f} (first ef reaching it)")
for short in libs:
    sweep = ", ".join(f"{x['ef_search']}:{x['recall']:.4f}/{x['qps']:.0f}" for x in sorted(points.get(short, []), key=lambda x: x["ef_search"]))
    lines.append(f"  {short} ef:recall/qps  {sweep}")
print("\n".join(lines) + "\n")
PY
}

for ds in $DATASETS; do
  case "$ds" in
    scifact)
      encode "$SCIFACT/corpus.jsonl.gz" "$OUT/scifact-corpus.npy"
      q="$SCIFACT/queries.jsonl"; [[ -f "$q" ]] || q="$SCIFACT/queries.jsonl.gz"
      encode "$q" "$OUT/scifact-queries.npy"
      run_pair scifact "$OUT/scifact-corpus.npy" "$OUT/scifact-queries.npy"
      ;;
    synth)
      c="$OUT/synth-$N-corpus.npy" q="$OUT/synth-$N-queries.npy"
      if [[ ! -s "$c" || ! -s "$q" ]]; then
        echo "generating $N synthetic vectors" >&2
        "$PY" bench/hnsw/make_data.py "$N" "$c.tmp.npy" "$q.tmp.npy" --nq "$NQ"
        mv "$c.tmp.npy" "$c"; mv "$q.tmp.npy" "$q"
      fi
      run_pair "synth-$N" "$c" "$q"
      ;;
    *) echo "run.sh: unknown dataset $ds" >&2; exit 1 ;;
  esac
done
