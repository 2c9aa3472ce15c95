#!/usr/bin/env bash
# The ablation behind docs/ablation.md: from all-MiniLM-L6-v2, train under each recipe and
# score on the setting's test split; every run appends one JSON line (its commands, scores,
# training time, masked pairs, judge tokens) to $WORK/manifest.jsonl, which
# `sieve report` turns into the Markdown report.
#
#   bench/ablation/run.sh SETTING [CONFIGS...]
#     SETTING  medquad  MedQuAD task (bench/medquad/make_task.py, seed 13, TOPICS topic groups)
#              scifact  SciFact train -> test (the control)
#     CONFIGS  any of: base inbatch gradcache exact-none exact-known exact-judge exact-judge-positive
#              exact-alternate (default: all)
# Env: WORK (runs/ablation), TOPICS (600; 0 = the full MedQuAD task), EPOCHS (1),
#      JUDGE_URL (http://127.0.0.1:8099/v1), JUDGE_K (candidates judged per query, 2),
#      JUDGE_MAX_REQUESTS (a request budget for the judge: the rest stays unjudged, unmasked),
#      PRECISION (calibration precision target, 0.4: the most Qwen2.5-Coder-0.5B reaches with margin), CAL_SAMPLE (200),
#      EVAL_DATA (score on this BEIR directory's test split instead of the setting's own; the
#                 models already trained are reused), TAG (the setting's name in the manifest and
#                 results, default SETTING; give a new one with EVAL_DATA)
# Example, the models trained on the 600-topic subset scored on the full MedQuAD test split
# (no topic of the subset's train split is in it; see docs/ablation.md):
#   python3 bench/medquad/make_task.py --out runs/ablation/medquad-full
#   EVAL_DATA=runs/ablation/medquad-full TAG=medquad-fulltest bench/ablation/run.sh medquad
set -euo pipefail
cd "$(dirname "$0")/../.."
SETTING=${1:?usage: run.sh medquad|scifact [CONFIGS...]}; shift
CONFIGS=${*:-base inbatch gradcache exact-none exact-known exact-judge exact-judge-positive exact-alternate}
WORK=${WORK:-runs/ablation}/$SETTING
TOPICS=${TOPICS:-600}
EPOCHS=${EPOCHS:-1}
JUDGE_URL=${JUDGE_URL:-http://127.0.0.1:8099/v1}
JUDGE_K=${JUDGE_K:-2}
PRECISION=${PRECISION:-0.4}
CAL_SAMPLE=${CAL_SAMPLE:-200}
MODEL=models/all-MiniLM-L6-v2
SIEVE=target/release/sieve
mkdir -p "$WORK"
case "$SETTING" in
  medquad)
    DATA=$WORK/task
    [ -f "$DATA/qrels/test.tsv" ] || python3 bench/medquad/make_task.py --out "$DATA" --seed 13 --topics "$TOPICS" | tee "$WORK/task.txt" ;;
  scifact) DATA=${SCIFACT_DIR:-../shared/data/scifact} ;;
  *) echo "unknown setting $SETTING" >&2; exit 2 ;;
esac
TRAIN=("--data" "$DATA" "--split" "train")
EVAL_DATA=${EVAL_DATA:-$DATA}
TAG=${TAG:-$SETTING}

# Judge stage (shared by the judge configs): calibrate, mine, label.
judge_stage() {
  [ -f "$WORK/labeled.parquet" ] && return
  $SIEVE judge calibrate --quiet --pairs ../shared/data/judge-calibration/liveqa-med/judged_pairs.jsonl.gz \
    --sample "$CAL_SAMPLE" --precision-target "$PRECISION" --max-doc-tokens 192 --endpoint "$JUDGE_URL" \
    --cache "$WORK/verdicts.log" --json "$WORK/calibration.json" | tee "$WORK/calibration.txt"
  THRESH=$(python3 -c "import json;v=json.load(open('$WORK/calibration.json'))['threshold_for_precision'];print(v['threshold'] if v else '')")
  [ -n "$THRESH" ] || { echo "the judge reaches precision $PRECISION at no threshold" >&2; exit 1; }
  $SIEVE mine --quiet --dataset "$DATA" --split train --bm25-k "$JUDGE_K" --dense-k "$JUDGE_K" \
    --num-negatives "$JUDGE_K" --out "$WORK/mined.parquet"
  $SIEVE judge --quiet --mined "$WORK/mined.parquet" --out "$WORK/labeled.parquet" --endpoint "$JUDGE_URL" \
    --max-doc-tokens 192 --concurrency 4 --threshold "$THRESH" --cache "$WORK/verdicts.log" \
    ${JUDGE_MAX_REQUESTS:+--max-requests "$JUDGE_MAX_REQUESTS"} | tee "$WORK/judge.txt"
}

run() { # name, train args...
  local name=$1; shift
  local out=$WORK/$name t0 t1 cmd=""
  if [ "$name" != base ]; then
    if [ ! -f "$out/model.safetensors" ]; then
      cmd="$SIEVE train --quiet --model $MODEL --output $out --epochs $EPOCHS --save-every 0 $*"
      t0=$(date +%s.%N)
      $cmd --resume > "$out.train.txt" 2>&1 || { cat "$out.train.txt"; exit 1; }
      t1=$(date +%s.%N)
      echo "$t0 $t1" > "$out.seconds"
    fi
    cmd="$SIEVE train --model $MODEL --output $out --epochs $EPOCHS $*"
  fi
  local model=$out; [ "$name" = base ] && model=$MODEL
  $SIEVE eval --quiet --model "$model" --model-name "$TAG-$name" --dataset "$EVAL_DATA" --split test \
    --output-dir "$WORK/results" > /dev/null
  python3 - "$WORK" "$TAG" "$name" "$cmd" "$EVAL_DATA" >> "$WORK/manifest.jsonl" <<'PY'
import glob, json, os, sys
work, setting, name, cmd, data = sys.argv[1:6]
res = glob.glob(f"{work}/results/{setting}-{name}/*.json")[0]
s = json.load(open(res))["scores"]["test"][0]
row = {"setting": setting, "config": name, "ndcg_at_10": s["ndcg_at_10"], "recall_at_100": s["recall_at_100"],
       "train_command": cmd, "eval_command": f"sieve eval --model {work + '/' + name if name != 'base' else 'models/all-MiniLM-L6-v2'} --dataset {data} --split test",
       "result": res}
if name != "base":
    t0, t1 = map(float, open(f"{work}/{name}.seconds").read().split())
    logs = [json.loads(l) for l in open(f"{work}/{name}/metrics.jsonl") if '"loss"' in l]
    row.update(train_seconds=t1 - t0, steps=len(logs), pairs=sum(l["pairs"] for l in logs),
               masked_pairs=sum(l["false_negatives"] for l in logs), identical_pairs=sum(l["identical"] for l in logs),
               final_loss=logs[-1]["loss"] if logs else None)
if "labeled" in cmd and os.path.exists(f"{work}/judge.txt"):
    row["judge"] = open(f"{work}/judge.txt").read().strip().splitlines()[-3:]
    cal = json.load(open(f"{work}/calibration.json"))
    row["judge_threshold"] = cal["threshold_for_precision"]
    row["judge_model"] = cal["judge_model"]
print(json.dumps(row))
PY
  tail -1 "$WORK/manifest.jsonl"
}

for c in $CONFIGS; do
  case "$c" in
    base) run base ;;
    inbatch) run inbatch "${TRAIN[@]}" --false-negatives none --batch-size 32 ;;
    gradcache) run gradcache "${TRAIN[@]}" --false-negatives none --batch-size 256 --mini-batch-size 32 ;;
    exact-none) run exact-none "${TRAIN[@]}" --objective exact --false-negatives none --batch-size 32 ;;
    exact-known) run exact-known "${TRAIN[@]}" --objective exact --false-negatives mask --ignore-judge --batch-size 32 ;;
    exact-judge) judge_stage; run exact-judge --data "$WORK/labeled.parquet" --num-negatives 0 --objective exact --false-negatives mask --batch-size 32 ;;
    exact-judge-positive) judge_stage; run exact-judge-positive --data "$WORK/labeled.parquet" --num-negatives 0 --objective exact --false-negatives positive --batch-size 32 ;;
    exact-alternate) run exact-alternate "${TRAIN[@]}" --objective exact --false-negatives mask --ignore-judge --batch-size 32 --alternate-every 10 ;;
    *) echo "unknown config $c" >&2; exit 2 ;;
  esac
done
