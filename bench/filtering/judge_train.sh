#!/usr/bin/env bash
# The real judge as a training arm, and measured on every real false negative it would be
# shown. Judges the top-K fused candidates of every training query (mined against the
# labelled positives alone: what the `hardneg` rows train on) with the default prompt and
# the document-first one (`--template document-first`); calibrates each prompt on
# LiveQA-Med's human grades (the threshold a user without in-domain labels would take);
# and writes, for the default prompt and for the two prompts fused (mean P), the pairs at
# or above that threshold as judged qrels, $WORK/judged-judge-<prompt>.tsv, which
# run.sh's `judge-<prompt>` arms train on. Prints precision / recall / AUC against the
# benchmark's oracle (bench/filtering/judge_report.py).
#
#   bench/filtering/judge_train.sh [SETTING]          (climate-fever)
# Env: WORK (runs/filtering), JUDGE_URL (http://127.0.0.1:8099/v1; start one with
#      SIEVE_LLM_PORT=8099 scripts/llm-server.sh start), TOPK (2), TARGET (LiveQA-Med
#      precision target, 0.35: the 0.5B judge never reaches 0.5 there), LIVEQA_SAMPLE (LiveQA-Med pairs drawn for calibration, 240
#      of 565), LARGE_URL (a Qwen2.5-Coder-1.5B server for the cascade, http://127.0.0.1:8097/v1;
#      SIEVE_LLM_MODEL=qwen1.5b SIEVE_LLM_PORT=8097 scripts/llm-server.sh start), LARGE_N (its
#      sample of the pairs, 240; 0 = no cascade), SIEVE, MAXLEN (128)
# Every verdict is cached ($WORK/judge-verdicts.log): a killed run resumes for free.
set -euo pipefail
cd "$(dirname "$0")/../.."
SETTING=${1:-climate-fever}
WORK=${WORK:-runs/filtering}/$SETTING
SIEVE=${SIEVE:-target/release/sieve}
JUDGE_URL=${JUDGE_URL:-http://127.0.0.1:8099/v1}
MAXLEN=${MAXLEN:-128}
TOPK=${TOPK:-2}
TARGET=${TARGET:-0.35}
LIVEQA_SAMPLE=${LIVEQA_SAMPLE:-240}
LIVEQA=${LIVEQA:-../shared/data/judge-calibration/liveqa-med/judged_pairs.jsonl.gz}
DATA=$WORK/data
SPARSE=$WORK/mined-sparse.parquet
[ -f "$SPARSE" ] || $SIEVE mine --quiet --dataset "$DATA" --split train-sparse --bm25-k 20 --dense-k 20 \
  --max-seq-length "$MAXLEN" --out "$SPARSE" > "$WORK/mined-sparse.txt"
PAIRS=$WORK/judge-train-pairs.jsonl
python3 - "$DATA" "$SPARSE" "$TOPK" "$PAIRS" <<'PY'
import csv, json, sys
import pyarrow.parquet as pq
data, sparse, k, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
hidden = set()
with open(f"{data}/hidden.tsv") as f:
    for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
        hidden.add((r["query-id"], r["corpus-id"]))
docs = {}
for line in open(f"{data}/corpus.jsonl"):
    d = json.loads(line)
    docs[d["_id"]] = (d["title"] + " " + d["text"]).strip()
n = pos = 0
with open(out, "w") as f:
    for row in pq.read_table(sparse, columns=["query_id", "query", "candidates"]).to_pylist():
        for c in sorted(row["candidates"], key=lambda c: c["rank"])[:k]:
            g = int((row["query_id"], c["doc_id"]) in hidden)
            f.write(json.dumps({"query_id": row["query_id"], "doc_id": c["doc_id"], "query": row["query"],
                                "document": docs[c["doc_id"]], "grade": g}) + "\n")
            n += 1; pos += g
print(f"top-{k} candidates of every training query: {n} pairs, {pos} hidden positives (base rate {pos / n:.3f})")
PY
for t in default doc-first; do
  tmpl=(); [ "$t" = doc-first ] && tmpl=(--template document-first)
  common=(--precision-target "$TARGET" --max-doc-tokens 192 --concurrency 4 --endpoint "$JUDGE_URL"
          --cache "$WORK/judge-verdicts.log" "${tmpl[@]}")
  [ -f "$WORK/judge-train-$t.json" ] || $SIEVE judge calibrate --pairs "$PAIRS" --query-field query \
    --doc-field document --grade-field grade --relevant-grade 1 --json "$WORK/judge-train-$t.json" "${common[@]}" \
    > "$WORK/judge-train-$t.txt"
  [ -f "$WORK/judge-liveqa-$t.json" ] || $SIEVE judge calibrate --pairs "$LIVEQA" \
    --sample "$LIVEQA_SAMPLE" --json "$WORK/judge-liveqa-$t.json" "${common[@]}" > "$WORK/judge-liveqa-$t.txt"
done
# The larger judge (Qwen2.5-Coder-1.5B) on a seeded sample of the same pairs, for the
# cascade (0.5B screens, 1.5B confirms) when a server for it answers at $LARGE_URL.
LARGE_URL=${LARGE_URL:-http://127.0.0.1:8097/v1}
LARGE_N=${LARGE_N-240}
if [ "${LARGE_N:-0}" != 0 ] && curl -sf "$LARGE_URL/models" > /dev/null; then
  python3 - "$PAIRS" "$LARGE_N" "$WORK/judge-train-sample.jsonl" <<'PY'
import json, random, sys
pairs = [json.loads(l) for l in open(sys.argv[1])]
idx = sorted(random.Random(7).sample(range(len(pairs)), min(int(sys.argv[2]), len(pairs))))
with open(sys.argv[3], "w") as f:
    for i in idx:
        f.write(json.dumps(dict(pairs[i], pair_index=i)) + "\n")
PY
  [ -f "$WORK/judge-train-large.json" ] || $SIEVE judge calibrate --pairs "$WORK/judge-train-sample.jsonl" \
    --query-field query --doc-field document --grade-field grade --relevant-grade 1 \
    --precision-target "$TARGET" --max-doc-tokens 192 --concurrency 4 --endpoint "$LARGE_URL" \
    --cache "$WORK/judge-verdicts.log" --json "$WORK/judge-train-large.json" > "$WORK/judge-train-large.txt"
fi
python3 bench/filtering/judge_report.py --work "$WORK" --pairs "$PAIRS" --target "$TARGET" --out "$WORK/judge-train.md"
cat "$WORK/judge-train.md"
