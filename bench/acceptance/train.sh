#!/usr/bin/env bash
# Fine-tunes all-MiniLM-L6-v2 on SciFact's train pairs with `sieve train` (in-batch softmax,
# sentence-transformers' MNRL recipe: batch 32, scale 20, lr 2e-5, 10% warmup, linear decay)
# and evaluates it on SciFact test; fails unless nDCG@10 beats the base model's published
# 0.64508. Then checks that sentence-transformers loads the exported model to the same
# embeddings (bench/train/check_export.sh) when the Python venv is there.
# Env: SCIFACT_DIR, EPOCHS (2), TRAIN_OUT (keep the model there instead of a temp dir).
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${SCIFACT_DIR:-../shared/data/scifact}
PAIRS=${SCIFACT_PAIRS:-../shared/data/train/scifact-train/pairs.jsonl.gz}
EPOCHS=${EPOCHS:-2}
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
OUT=${TRAIN_OUT:-$TMP/scifact-ft}
scripts/fetch-model.sh >&2
scripts/build.sh -q
rm -rf "$OUT"
T0=$(date +%s)
target/release/sieve train --quiet --model models/all-MiniLM-L6-v2 --data "$PAIRS" --output "$OUT" \
  --epochs "$EPOCHS" --batch-size 32 --lr 2e-5 --save-every 0
T1=$(date +%s)
target/release/sieve eval --quiet --no-cache --model "$OUT" --model-name scifact-ft --dataset "$DATA" \
  --output-dir "$TMP/results" | grep -E "ndcg|recall" | head -4
python3 - "$TMP/results/scifact-ft/SciFact.json" "$(( T1 - T0 ))" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))["scores"]["test"][0]
ok = s["ndcg_at_10"] > 0.64508
print(f"fine-tuned all-MiniLM-L6-v2 on SciFact test: nDCG@10 {s['ndcg_at_10']:.5f} (base 0.64508), "
      f"Recall@100 {s['recall_at_100']:.5f}; training took {sys.argv[2]} s  {'OK' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY
if [ -x .venv/bin/python ]; then bench/train/check_export.sh "$OUT" 200; fi
