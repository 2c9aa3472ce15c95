#!/usr/bin/env bash
# Corpus-encoding throughput: sieve vs sentence-transformers (PyTorch CPU), same model,
# same texts (the first N SciFact documents, title + " " + text), same batch size and
# max_seq_length, same machine, alternating runs; prints medians and the ratio.
#
#   bench/encode/run.sh [N=500] [REPEATS=3]
#
# PyTorch runs at its best here: OMP_NUM_THREADS=<cores> OMP_WAIT_POLICY=PASSIVE.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-500}
REPEATS=${2:-3}
CORPUS=${SCIFACT_CORPUS:-../shared/data/scifact/corpus.jsonl.gz}
MODEL=models/all-MiniLM-L6-v2
THREADS=$(nproc)
scripts/fetch-model.sh >&2
[ -x .venv/bin/python ] || scripts/setup-python.sh >&2
scripts/build.sh -q
OUT=target/bench-encode.jsonl   # raw runs, kept for inspection
mkdir -p target && : > "$OUT"
for i in $(seq "$REPEATS"); do
  echo "run $i/$REPEATS" >&2
  target/release/sieve encode --model "$MODEL" --input "$CORPUS" --limit "$N" \
    --batch-size 32 --max-seq-length 256 --json >> "$OUT"
  OMP_NUM_THREADS=$THREADS OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/encode/st_encode.py \
    --model "$MODEL" --corpus "$CORPUS" --limit "$N" --batch-size 32 --max-seq-length 256 \
    2>/dev/null >> "$OUT"
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
by = {}
for r in rows:
    by.setdefault(r["tool"], []).append(r)
def med(tool, key):
    return statistics.median(r[key] for r in by[tool])
s, t = "sieve", "sentence-transformers"
print(f"texts per run: {rows[0]['texts']}, batch 32, max_seq_length 256, runs: {len(by[s])}")
for tool in (s, t):
    runs = ", ".join("%.2f" % r["texts_per_s"] for r in by[tool])
    print(f"{tool:>22}: median {med(tool, 'texts_per_s'):7.2f} texts/s "
          f"(runs: {runs}), peak RSS {med(tool, 'peak_rss_mb'):.0f} MiB")
print(f"ratio sieve / sentence-transformers: {med(s, 'texts_per_s') / med(t, 'texts_per_s'):.2f}x")
PY
