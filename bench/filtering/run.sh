#!/usr/bin/env bash
# The filtering experiment behind docs/filtering.md: from all-MiniLM-L6-v2, on a
# hidden-positive benchmark (bench/filtering/make_benchmark.py), train every
# (denominator, scale, arm) listed and score it on the test split (all relevant documents,
# hidden ones included) and on test-sparse (the labelled positive alone). Each finished run
# appends one JSON line (commands, scores, dose, masks, time) to $WORK/manifest.jsonl; a
# row already there is skipped, a run killed midway resumes from its checkpoint.
#
#   bench/filtering/run.sh SETTING RUN...
#     SETTING  climate-fever | medquad-multi | medquad-N (N train questions, for the scaling chart)
#     RUN      base, or DENOM:SCALE:ARM with
#              DENOM  random | clustered | gradcache (256, mini-batches of 32) | exact  (batch 32)
#                     | hardneg (random batches of 32, each query with 3 hard negatives mined
#                       against the labelled positives alone, so the hidden positives the miner
#                       finds are among them: RocketQA's setting; the arm decides which mined
#                       candidates are labelled relevant: none keeps the oracle's as negatives)
#              SCALE  20 | 50 (1/temperature)
#              ARM    none | oracle-mask | oracle-positive | simP-R (a simulated judge of
#                     precision P and recall R, e.g. sim0.7-0.6) | judge-default, judge-doc-first,
#                     judge-fused (the real local judge's verdicts at its LiveQA-Med threshold,
#                     from bench/filtering/judge_train.sh); hardneg only: any of those with
#                     -distill (oracle-distill, sim0.7-0.6-distill): masked as the arm says, plus
#                     listwise distillation from the labels as P(relevant) 1/0 (--distill-weight
#                     DISTILL_WEIGHT, --distill-temperature 0.1, 8 candidates); -distill-only:
#                     the distillation term alone, no contrastive loss; graded: a simulated
#                     graded judge's P(relevant) on every candidate (bench/filtering/score_mined.py,
#                     AUC near 0.8), masked by its labels (graded) or also distilled (graded-distill);
#                     judge-<prompt>-distill: masked by the real judge's verdicts and distilled
#                     from its own P(relevant) on the top-2 candidates it judged (the rest unscored)
#   bench/filtering/run.sh climate-fever grid    # the grid of docs/filtering.md
# Env: WORK (runs/filtering), EPOCHS (2), LR (2e-5, peak), MAXLEN (128 tokens, training and evaluation),
#      SIEVE (target/release/sieve), MODEL (models/all-MiniLM-L6-v2),
#      TOPICS (MedQuAD settings: a seeded 1500 of its topic groups, so that the corpus is
#              5,840 answers and an evaluation fits the machine; 0 = all 4,600)
# Then: python3 bench/filtering/report.py runs/filtering/*/manifest.jsonl --out docs/filtering-results.md
set -euo pipefail
cd "$(dirname "$0")/../.."
SETTING=${1:?usage: run.sh SETTING RUN...}; shift
WORK=${WORK:-runs/filtering}/$SETTING
EPOCHS=${EPOCHS:-2}
LR=${LR:-2e-5}
TOPICS=${TOPICS:-1500}
MAXLEN=${MAXLEN:-128}
SIEVE=${SIEVE:-target/release/sieve}
MODEL=${MODEL:-models/all-MiniLM-L6-v2}
DATA=$WORK/data
mkdir -p "$WORK"
if [ ! -f "$DATA/qrels/test.tsv" ]; then
  case "$SETTING" in
    climate-fever) python3 bench/filtering/make_benchmark.py --source climate-fever --out "$DATA" ;;
    medquad-multi) python3 bench/filtering/make_benchmark.py --source medquad --partial-copies 0.5 \
                 --topics "$TOPICS" --out "$DATA" ;;
    medquad-*) python3 bench/filtering/make_benchmark.py --source medquad --partial-copies 0.5 \
                 --topics "$TOPICS" --train-queries "${SETTING#medquad-}" --out "$DATA" ;;
    *) echo "unknown setting $SETTING" >&2; exit 2 ;;
  esac
fi
MINED=$WORK/mined.parquet
# Mined candidates (every known positive kept apart): where simulated judges draw their
# wrong verdicts. Mined only when a run needs them.
ensure_mined() {
  [ -f "$MINED" ] || $SIEVE mine --quiet --dataset "$DATA" --split train --bm25-k 20 --dense-k 20 \
    --max-seq-length "$MAXLEN" --out "$MINED" > "$WORK/mined.txt"
}

# A real judge's verdicts (judge-<prompt> arms) come from bench/filtering/judge_train.sh.
need_judged() {
  case "$1" in judge-*) [ -f "$WORK/judged-$1.tsv" ] || {
    echo "$WORK/judged-$1.tsv is missing: run bench/filtering/judge_train.sh $SETTING first" >&2; exit 2; } ;;
  esac
}

done_already() { [ -f "$WORK/manifest.jsonl" ] && grep -q "\"run\": \"$1\"" "$WORK/manifest.jsonl"; }

one() { # RUN
  local run=$1 denom scale arm
  done_already "$run" && { echo "skip $run (in the manifest)"; return; }
  local name=${run//:/_} out train_cmd="" extra=() negs=0
  out=$WORK/$name
  if [ "$run" != base ]; then
    IFS=: read -r denom scale arm <<< "$run"
    case "$denom" in
      random) extra+=(--batch-size 32) ;;
      clustered) extra+=(--batch-size 32 --batching clustered) ;;
      gradcache) extra+=(--batch-size 256 --mini-batch-size 32) ;;
      exact) extra+=(--batch-size 32 --objective exact) ;;
      hardneg) extra+=(--batch-size 32); negs=3 ;;
      *) echo "unknown denominator $denom" >&2; exit 2 ;;
    esac
    local data=$DATA
    if [ "$denom" = hardneg ]; then
      local sparse=$WORK/mined-sparse.parquet relevant=$DATA/hidden.tsv distill=0
      if [ "$arm" != "${arm%-distill-only}" ]; then
        arm=${arm%-distill-only}; distill=1
        extra+=(--distill-weight 1 --distill-temperature 0.1 --distill-candidates 8 --distill-only)
      elif [ "$arm" != "${arm%-distill}" ]; then
        arm=${arm%-distill}; distill=1
        extra+=(--distill-weight "${DISTILL_WEIGHT:-1}" --distill-temperature 0.1 --distill-candidates 8)
      fi
      [ -f "$sparse" ] || $SIEVE mine --quiet --dataset "$DATA" --split train-sparse --bm25-k 20 --dense-k 20 \
        --max-seq-length "$MAXLEN" --out "$sparse" > "$WORK/mined-sparse.txt"
      case "$arm" in sim*|judge-*) relevant=$WORK/judged-$arm.tsv ;; esac
      need_judged "$arm"
      if [ "$relevant" != "$DATA/hidden.tsv" ] && [ ! -f "$relevant" ]; then
        ensure_mined
        local pr=${arm#sim}
        python3 bench/filtering/simulate_judge.py --benchmark "$DATA" --mined "$MINED" \
          --precision "${pr%-*}" --recall "${pr#*-}" --out "$relevant" > "$relevant.json"
      fi
      data=$WORK/labeled-$arm.parquet
      # A real judge distilled: its own P(relevant) on the pairs it judged (the mean of the
      # two prompts for fused), every other candidate unscored; the labels are its verdicts.
      if [ "$distill" = 1 ] && [ "$arm" != "${arm#judge-}" ]; then
        local prompts=(default doc-first) scores=()
        [ "$arm" = judge-fused ] || prompts=("${arm#judge-}")
        for t in "${prompts[@]}"; do scores+=("$WORK/judge-train-$t.json"); done
        data=$WORK/labeled-$arm-scored.parquet
        [ -f "$data" ] || python3 bench/filtering/label_mined.py --mined "$sparse" --relevant "$relevant" \
          --scores "$WORK/judge-train-pairs.jsonl" "${scores[@]}" --out "$data" > "$data.json"
      fi
      if [ "$arm" = graded ]; then
        [ -f "$data" ] || python3 bench/filtering/score_mined.py --benchmark "$DATA" --mined "$sparse" \
          --out "$data" > "$data.json"
      fi
      [ -f "$data" ] || python3 bench/filtering/label_mined.py --mined "$sparse" --relevant "$relevant" \
        --out "$data" > "$data.json"
      case "$arm" in
        none) extra+=(--false-negatives none) ;;
        oracle-mask|oracle|graded|sim*|judge-*) extra+=(--false-negatives mask) ;;
        oracle-positive) extra+=(--false-negatives positive) ;;
      esac
      arm=hardneg-handled
    fi
    case "$arm" in
      none) extra+=(--false-negatives none) ;;
      oracle-mask) extra+=(--false-negatives mask --ignore-judge) ;;
      oracle-positive) extra+=(--false-negatives positive --ignore-judge) ;;
      hardneg-handled) ;;
      sim*)
        local pr=${arm#sim} judged=$WORK/judged-$arm.tsv
        ensure_mined
        [ -f "$judged" ] || python3 bench/filtering/simulate_judge.py --benchmark "$DATA" --mined "$MINED" \
          --precision "${pr%-*}" --recall "${pr#*-}" --out "$judged" > "$judged.json"
        extra+=(--judged-qrels "$judged" --ignore-known-positives --false-negatives mask) ;;
      judge-*)
        need_judged "$arm"
        extra+=(--judged-qrels "$WORK/judged-$arm.tsv" --ignore-known-positives --false-negatives mask) ;;
      *) echo "unknown arm $arm" >&2; exit 2 ;;
    esac
    train_cmd="$SIEVE train --quiet --model $MODEL --data $data --min-positive-score 2 --num-negatives $negs --epochs $EPOCHS --lr $LR --max-seq-length $MAXLEN --scale $scale --save-every 10 --output $out ${extra[*]}"
    if [ ! -f "$out/model.safetensors" ]; then
      local t0 t1
      t0=$(date +%s.%N)
      $train_cmd --resume > "$out.train.txt" 2>&1 || { cat "$out.train.txt"; exit 1; }
      t1=$(date +%s.%N)
      echo "$t0 $t1" > "$out.seconds"
    fi
  fi
  local model=$out; [ "$run" = base ] && model=$MODEL
  for split in test test-sparse; do
    $SIEVE eval --quiet --model "$model" --model-name "$name" --task-name "$SETTING-$split" --dataset "$DATA" \
      --split "$split" --max-seq-length "$MAXLEN" --output-dir "$WORK/results" > /dev/null
  done
  python3 - "$WORK" "$SETTING" "$run" "$name" "$train_cmd" "$DATA" "$MAXLEN" "$MODEL" >> "$WORK/manifest.jsonl" <<'PY'
import json, os, sys
work, setting, run, name, cmd, data, maxlen, model = sys.argv[1:9]
row = {"setting": setting, "run": run}
if run != "base":
    denom, scale, arm = run.split(":")
    row.update(denominator=denom, scale=float(scale), arm=arm)
for split in ("test", "test-sparse"):
    res = f"{work}/results/{name}/{setting}-{split}.json"
    s = json.load(open(res))["scores"][split][0]
    key = "" if split == "test" else "_sparse"
    row["ndcg_at_10" + key] = s["ndcg_at_10"]
    row["recall_at_100" + key] = s["recall_at_100"]
    row["result" + key] = res
row["train_command"] = cmd
row["eval_command"] = (f"sieve eval --model {work + '/' + name if run != 'base' else model} --dataset {data} "
                       f"--split test --max-seq-length {maxlen}")
if run != "base":
    t0, t1 = map(float, open(f"{work}/{name}.seconds").read().split())
    logs = [json.loads(l) for l in open(f"{work}/{name}/metrics.jsonl") if '"loss"' in l]
    def mean(xs):
        xs = list(xs)
        return sum(xs) / len(xs) if xs else None
    last = max(l["epoch"] for l in logs)
    row.update(train_seconds=t1 - t0, steps=len(logs), pairs=sum(l["pairs"] for l in logs),
               masked_pairs=sum(l["false_negatives"] for l in logs),
               dose_known=mean(l["dose"]["known"]["mean"] for l in logs),
               dose_judged=mean(l["dose"]["judged"]["mean"] for l in logs),
               dose_known_first_epoch=mean(l["dose"]["known"]["mean"] for l in logs if l["epoch"] == 0),
               dose_known_last_epoch=mean(l["dose"]["known"]["mean"] for l in logs if l["epoch"] == last),
               dose_known_max=max(l["dose"]["known"]["max"] for l in logs),
               dose_positive=mean(l["dose"]["positive"]["mean"] for l in logs),
               final_loss=logs[-1]["loss"])
    labels = row["arm"].removesuffix("-only").removesuffix("-distill")
    if labels.startswith(("sim", "judge-")):
        row["judge"] = json.load(open(f"{work}/judged-{labels}.tsv.json"))
    elif labels == "graded":
        row["judge"] = json.load(open(f"{work}/labeled-graded.parquet.json"))
print(json.dumps(row))
PY
  tail -1 "$WORK/manifest.jsonl"
}

RUNS=()
for r in "$@"; do
  if [ "$r" = grid ]; then
    # In priority order: what a session cannot finish is the end of this list.
    RUNS+=(base)
    for a in none oracle-mask oracle-positive sim0.95-0.9 sim0.7-0.6 sim0.4-0.35; do RUNS+=("exact:20:$a"); done
    for d in clustered random gradcache; do for a in none oracle-mask; do RUNS+=("$d:20:$a"); done; done
    for d in exact clustered; do for a in none oracle-mask; do RUNS+=("$d:50:$a"); done; done
    for a in none oracle-mask oracle-positive sim0.95-0.9 sim0.7-0.6 sim0.4-0.35; do RUNS+=("hardneg:20:$a"); done
    for a in sim0.7-0.6 sim0.4-0.35; do RUNS+=("exact:50:$a"); done
    for d in clustered random gradcache; do for a in oracle-positive sim0.95-0.9 sim0.7-0.6 sim0.4-0.35; do RUNS+=("$d:20:$a"); done; done
  elif [ "$r" = long ]; then
    # The long regime (run with EPOCHS=4 LR=1e-4): more pressure on every false negative.
    RUNS+=(base)
    for a in none oracle-mask oracle-positive sim0.95-0.9 sim0.7-0.6 sim0.4-0.35; do RUNS+=("exact:20:$a"); done
    for a in none oracle-mask; do RUNS+=("clustered:20:$a" "random:20:$a"); done
  else
    RUNS+=("$r")
  fi
done
for r in "${RUNS[@]}"; do one "$r"; done
