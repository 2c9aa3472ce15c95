#!/usr/bin/env bash
# Mining at scale: a synthetic BEIR set of N documents (default 1,000,000) and NQ
# queries (default 10,000) with precomputed 384-d embeddings (read memory-mapped),
# mined with BM25 + dense search as `--dense DENSE` chooses (default auto: exact at this
# size, with its reason printed; DENSE=hnsw builds the graph, ~35-70 min at 1M on 2
# cores); prints wall time and peak RSS (the acceptance bound is 8 GiB).
#
#   bench/mine/run.sh [N=1000000] [NQ=10000]   env: DENSE (auto|exact|hnsw)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-1000000}
NQ=${2:-10000}
DENSE=${DENSE:-auto}
DIR=target/bench-mine/synth-$N
[ -x .venv/bin/python ] || scripts/setup-python.sh >&2
scripts/build.sh -q
if [ ! -f "$DIR/queries.npy" ]; then
  .venv/bin/python bench/mine/make_synthetic.py "$N" "$NQ" "$DIR"
fi
rm -rf "$DIR/mined.parquet" "$DIR/mined.parquet.parts" "$DIR/cache"
/usr/bin/time -v target/release/sieve mine --quiet --dataset "$DIR" --split train \
  --corpus-embeddings "$DIR/corpus.npy" --query-embeddings "$DIR/queries.npy" \
  --dense "$DENSE" --cache-dir "$DIR/cache" --out "$DIR/mined.parquet" \
  2> "$DIR/time.txt" | tee "$DIR/stats.txt"
grep -E "Elapsed|Maximum resident" "$DIR/time.txt"
grep -E "ready|wrote|dense search" "$DIR/time.txt" || true
