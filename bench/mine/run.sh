#!/usr/bin/env bash
# Mining at scale: a synthetic BEIR set of N documents (default 1,000,000) and NQ
# queries (default 10,000) with precomputed 384-d embeddings, mined with BM25 + HNSW;
# prints wall time and peak RSS (the acceptance bound is 8 GiB).
#
#   bench/mine/run.sh [N=1000000] [NQ=10000]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-1000000}
NQ=${2:-10000}
DIR=target/bench-mine/synth-$N
[ -x .venv/bin/python ] || scripts/setup-python.sh >&2
scripts/build.sh -q
if [ ! -f "$DIR/queries.npy" ]; then
  .venv/bin/python bench/mine/make_synthetic.py "$N" "$NQ" "$DIR"
fi
rm -rf "$DIR/mined.parquet" "$DIR/mined.parquet.parts" "$DIR/cache"
/usr/bin/time -v target/release/sieve mine --quiet --dataset "$DIR" --split train \
  --corpus-embeddings "$DIR/corpus.npy" --query-embeddings "$DIR/queries.npy" \
  --dense hnsw --cache-dir "$DIR/cache" --out "$DIR/mined.parquet" \
  2> "$DIR/time.txt" | tee "$DIR/stats.txt"
grep -E "Elapsed|Maximum resident" "$DIR/time.txt"
grep -E "ready|wrote" "$DIR/time.txt" || true
