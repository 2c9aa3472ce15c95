#!/usr/bin/env bash
# Every run of docs/filtering.md, in the order one session ran them (each phase resumes
# where it stopped, and a run already in a manifest is skipped; see run.sh), then the
# report. The order is the priority: what a session cannot finish is the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
phase() { "$@" || exit 1; }
# 1. Climate-FEVER hidden positives, 2 epochs at lr 2e-5 (sentence-transformers' default):
#    the exact softmax under every arm, then mined hard negatives (RocketQA's setting) under
#    every arm, then the no-mask / oracle pair of each in-batch denominator.
phase bench/filtering/run.sh climate-fever base exact:20:{none,oracle-mask,oracle-positive,sim0.95-0.9,sim0.7-0.6,sim0.4-0.35}
phase bench/filtering/run.sh climate-fever hardneg:20:{none,oracle-mask,oracle-positive,sim0.95-0.9,sim0.7-0.6,sim0.4-0.35}
phase bench/filtering/run.sh climate-fever {clustered,random,gradcache}:20:{none,oracle-mask}
# 2. Scale 50 (temperature 0.02): more of every query's mass on its hardest documents.
phase bench/filtering/run.sh climate-fever {exact,hardneg,clustered}:50:{none,oracle-mask} hardneg:50:{sim0.7-0.6,sim0.4-0.35}
# 3. The scaling chart: MedQuAD hidden positives (1,500 topic groups), exact softmax, with
#    and without the oracle's masks, for three training-set sizes.
phase bench/filtering/run.sh medquad-multi base
for s in medquad-multi medquad-1000 medquad-3098; do
  phase bench/filtering/run.sh "$s" exact:20:none exact:20:oracle-mask
done
# 4. The long regime: 4 epochs at lr 1e-4.
WORK=runs/filtering-long EPOCHS=4 LR=1e-4 phase bench/filtering/run.sh climate-fever \
  base exact:20:{none,oracle-mask,oracle-positive} hardneg:20:{none,oracle-mask}
# 5. The real judge (needs `SIEVE_LLM_PORT=8099 scripts/llm-server.sh start`, and for the
#    cascade `SIEVE_LLM_MODEL=qwen1.5b SIEVE_LLM_PORT=8097 scripts/llm-server.sh start`): every
#    top-2 candidate judged, calibrated on LiveQA-Med, then trained on.
phase bench/filtering/judge_train.sh climate-fever
phase bench/filtering/run.sh climate-fever hardneg:{20,50}:judge-default exact:20:judge-default
# 6. The rest of the grid: every arm under every denominator at both scales.
phase bench/filtering/run.sh climate-fever hardneg:50:{oracle-positive,sim0.95-0.9} \
  exact:50:{oracle-positive,sim0.95-0.9,sim0.7-0.6,sim0.4-0.35} {random,gradcache}:50:{none,oracle-mask}
phase bench/filtering/run.sh climate-fever {clustered,random,gradcache}:20:{oracle-positive,sim0.95-0.9,sim0.7-0.6,sim0.4-0.35}
phase bench/filtering/run.sh climate-fever {clustered,random,gradcache}:50:{oracle-positive,sim0.95-0.9,sim0.7-0.6,sim0.4-0.35}
WORK=runs/filtering-long EPOCHS=4 LR=1e-4 phase bench/filtering/run.sh climate-fever long
python3 bench/filtering/report.py runs/filtering/*/manifest.jsonl runs/filtering-long/*/manifest.jsonl \
  --out docs/filtering-results.md
