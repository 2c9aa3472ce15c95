#!/usr/bin/env bash
# Every run of docs/filtering.md, in the order one session ran them (each phase resumes
# where it stopped; see run.sh), then the report.
set -euo pipefail
cd "$(dirname "$0")/../.."
# 1. Climate-FEVER hidden positives, 2 epochs at lr 2e-5 (sentence-transformers' default):
#    the exact-softmax arms first, then the other denominators, scale 50, the rest.
phase() { "$@" || exit 1; }
GRID_FIRST=("base" exact:20:{none,oracle-mask,oracle-positive,sim0.95-0.9,sim0.7-0.6,sim0.4-0.35}
            {clustered,random,gradcache}:20:{none,oracle-mask})
phase bench/filtering/run.sh climate-fever "${GRID_FIRST[@]}"
# 2. The long regime: 4 epochs at lr 1e-4.
WORK=runs/filtering-long EPOCHS=4 LR=1e-4 phase bench/filtering/run.sh climate-fever long
# 3. The scaling chart: MedQuAD hidden positives (1,500 topic groups), exact softmax,
#    with and without the oracle's masks, for three training-set sizes.
for s in medquad-multi medquad-1000 medquad-3098; do
  phase bench/filtering/run.sh "$s" exact:20:none exact:20:oracle-mask
done
# 4. The rest of the Climate-FEVER grid.
phase bench/filtering/run.sh climate-fever grid
python3 bench/filtering/report.py runs/filtering/*/manifest.jsonl runs/filtering-long/*/manifest.jsonl \
  --out docs/filtering-results.md
