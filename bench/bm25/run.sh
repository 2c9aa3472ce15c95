#!/usr/bin/env bash
# BM25 throughput: sieve (tantivy index, bm25s scoring) vs bm25s (PyPI, numpy backend, as
# MTEB's bm25s baseline: method="lucene", k1=1.5, b=0.75, stopwords "en", PyStemmer
# english), same corpus, same queries, same machine, alternating runs; prints medians and
# ratios sieve / bm25s (> 1: sieve is faster).
#
#   bench/bm25/run.sh [REPEATS=5]
#
# Each of the REPEATS rounds runs one sieve process, then one bm25s process; each process
# builds its index once (timed) and times top-K retrieval INNER times (its median) for the
# query set as is and repeated QUERY_REPEAT times, with all cores and with one thread. The
# table shows the median over rounds. bm25s gets nothing special but n_threads: <cores>
# for "all cores", 0 (its sequential path) for "1 thread"; sieve gets a rayon pool of
# <cores> / 1 threads. Timed: text in, top-K out (query tokenisation included on both
# sides; bm25s's retrieve call alone is shown too). The first round also checks that both
# return the same top-10 (overlap, score difference). Below the table: a prototype of
# bm25s's precomputed-score layout with sieve's analyser (`bench_bm25 --prototype`; not
# part of the crate), to size what that layout would give sieve.
#
# Env: SCIFACT_DIR (../shared/data/scifact), K (100), QUERY_REPEAT (10), INNER (3);
# BM25S_SELECTION (auto: bm25s's top-k backend, JAX where jax is importable, else numpy);
# BENCH_BIN (a prebuilt bench_bm25: skips the build) and PYTHON (an interpreter that has
# bm25s and PyStemmer: skips the .venv setup), to run on a machine without a toolchain.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPEATS=${1:-5}
DATA=${SCIFACT_DIR:-../shared/data/scifact}
K=${K:-100}
QUERY_REPEAT=${QUERY_REPEAT:-10}
INNER=${INNER:-3}
THREADS=$(nproc)
CORPUS=$DATA/corpus.jsonl.gz
[ -e "$CORPUS" ] || CORPUS=$DATA/corpus.jsonl
QUERIES=$DATA/queries.jsonl.gz
[ -e "$QUERIES" ] || QUERIES=$DATA/queries.jsonl
PY=${PYTHON:-.venv/bin/python}
BIN=${BENCH_BIN:-target/release/examples/bench_bm25}

if [ -z "${PYTHON:-}" ]; then
  [ -x "$PY" ] || scripts/setup-python.sh >&2
  "$PY" -c "import bm25s, Stemmer" 2>/dev/null || .venv/bin/pip install -q bm25s PyStemmer >&2
fi
[ -n "${BENCH_BIN:-}" ] || scripts/build.sh -q >&2

OUT=target/bench-bm25.jsonl        # raw measurements, kept for inspection
RUN=target/bench-bm25-sieve-run.tsv  # sieve's top-K, for the overlap check
mkdir -p target && : > "$OUT"
for i in $(seq "$REPEATS"); do
  echo "round $i/$REPEATS" >&2
  dump=()
  compare=()
  if [ "$i" = 1 ]; then dump=(--dump-run "$RUN"); compare=(--sieve-run "$RUN"); fi
  "$BIN" "$CORPUS" "$QUERIES" "$K" "$INNER" \
    --threads "$THREADS,1" --query-repeat "1,$QUERY_REPEAT" --prototype "${dump[@]}" >> "$OUT"
  "$PY" bench/bm25/bm25s_bench.py "$CORPUS" "$QUERIES" --k "$K" --repeats "$INNER" \
    --threads "$THREADS,0" --query-repeat "1,$QUERY_REPEAT" --selection "${BM25S_SELECTION:-auto}" \
    "${compare[@]}" >> "$OUT"
done

"$PY" - "$OUT" "$THREADS" "$REPEATS" "$INNER" <<'PY'
import json, statistics, sys
path, cores, rounds, inner = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = [json.loads(l) for l in open(path) if l.strip().startswith("{")]
med = statistics.median

def pick(tool, event, **kw):
    return [r for r in rows if r["tool"] == tool and r["event"] == event
            and all(r[k] == v for k, v in kw.items())]

b_s = med(r["seconds"] for r in pick("sieve", "build"))
b_b = med(r["seconds"] for r in pick("bm25s", "build"))
docs = pick("sieve", "build")[0]["docs"]
base = min(r["queries"] for r in pick("sieve", "retrieve"))
k = pick("sieve", "retrieve")[0]["k"]
b0 = pick("bm25s", "build")[0]
print(f"\nBM25 throughput, {docs} documents, {base} queries, top-{k}, {cores} cores; "
      f"median of {rounds} rounds (each the median of {inner} timings); bm25s backend "
      f"{b0.get('backend')}, top-k selection {b0.get('selection')}\n")
print(f"| {'measure':<34} | {'sieve':>9} | {'bm25s':>9} | {'sieve/bm25s':>11} |")
print(f"|{'-' * 36}|{'-' * 11}|{'-' * 11}|{'-' * 13}|")
print(f"| {'index build, s (lower is better)':<34} | {b_s:9.3f} | {b_b:9.3f} | {b_b / b_s:10.2f}x |")
for rep in sorted({r["query_repeat"] for r in pick("sieve", "retrieve")}):
    for threads, label in ((cores, "all cores"), (1, "1 thread")):
        s = pick("sieve", "retrieve", query_repeat=rep, threads=threads)
        b = pick("bm25s", "retrieve", query_repeat=rep, threads=threads)
        if not s or not b:
            continue
        qs, qb = med(r["qps_median"] for r in s), med(r["qps_median"] for r in b)
        name = f"queries/s, {s[0]['queries']} q, {label}"
        print(f"| {name:<34} | {qs:9.0f} | {qb:9.0f} | {qs / qb:10.2f}x |")
    best_b = max(med(r["qps_median"] for r in pick("bm25s", "retrieve", query_repeat=rep, threads=t))
                 for t in (cores, 1))
    best_s = max(med(r["qps_median"] for r in pick("sieve", "retrieve", query_repeat=rep, threads=t))
                 for t in (cores, 1))
    name = f"queries/s, {rep}x set, best of each"
    print(f"| {name:<34} | {best_s:9.0f} | {best_b:9.0f} | {best_s / best_b:10.2f}x |")
print()
for rep in sorted({r["query_repeat"] for r in pick("bm25s", "retrieve")}):
    for threads in (cores, 1):
        b = pick("bm25s", "retrieve", query_repeat=rep, threads=threads)
        if b:
            print(f"bm25s retrieve call alone (no query tokenisation), {b[0]['queries']} q, "
                  f"n_threads={b[0]['n_threads']}: {med(r['retrieve_only_qps_median'] for r in b):.0f} q/s")
proto = "sieve-impacts-prototype"
if pick(proto, "build"):
    pb = med(r["seconds"] for r in pick(proto, "build"))
    print(f"prototype (precomputed scores, flat arrays; not shipped): build {pb:.3f} s", end="")
    for rep in sorted({r["query_repeat"] for r in pick(proto, "retrieve")}):
        for threads, label in ((cores, "all cores"), (1, "1 thread")):
            p = pick(proto, "retrieve", query_repeat=rep, threads=threads)
            s = pick("sieve", "retrieve", query_repeat=rep, threads=threads)
            if p and s:
                qp, qs = med(r["qps_median"] for r in p), med(r["qps_median"] for r in s)
                print(f"; {p[0]['queries']} q {label}: {qp:.0f} q/s ({qp / qs:.2f}x sieve)", end="")
    agree = pick(proto, "agreement")
    print(f"; top-10 overlap with sieve {agree[0]['top10_overlap_with_sieve']:.5f}" if agree else "")
print(f"peak RSS: sieve {max(r['peak_rss_mib'] for r in pick('sieve', 'retrieve')):.0f} MiB, "
      f"bm25s {max(r['peak_rss_mib'] for r in pick('bm25s', 'retrieve')):.0f} MiB")
for c in (r for r in rows if r["tool"] == "compare"):
    print(f"top-10 agreement over {c['queries']} queries: mean overlap {c['top10_overlap_mean']:.5f} "
          f"(min {c['top10_overlap_min']:.2f}, {c['queries_below_1']} below 1; "
          f"counting score ties {c['top10_overlap_ties_mean']:.5f}); "
          f"max score difference {c['score_max_abs_diff']:.2g} (relative {c['score_max_rel_diff']:.2g})")
PY
