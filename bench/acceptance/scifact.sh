#!/usr/bin/env bash
# Reproduces MTEB's published SciFact numbers with `sieve eval` and fails outside the
# tolerance: all-MiniLM-L6-v2 nDCG@10 0.64508 ± 0.003; BM25 0.68736 ± 0.01 (bm25s).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${SCIFACT_DIR:-../shared/data/scifact}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
scripts/fetch-model.sh >&2
scripts/build.sh -q
check() { # name json expected tolerance
  python3 - "$1" "$2" "$3" "$4" <<'PY'
import json, sys
name, path, expected, tol = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
got = json.load(open(path))["scores"]["test"][0]["ndcg_at_10"]
ok = abs(got - expected) <= tol
print(f"{name}: nDCG@10 {got:.5f} (expected {expected} ± {tol}) {'OK' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY
}
target/release/sieve eval --quiet --no-cache --model models/all-MiniLM-L6-v2 --dataset "$DATA" --output-dir "$OUT"
check "dense all-MiniLM-L6-v2" "$OUT/all-MiniLM-L6-v2/SciFact.json" 0.64508 0.003
target/release/sieve eval --quiet --retriever bm25 --dataset "$DATA" --output-dir "$OUT"
check "bm25 (tantivy)" "$OUT/bm25/SciFact.json" 0.68736 0.01
