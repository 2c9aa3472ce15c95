#!/usr/bin/env bash
# The real judge on the benchmark's real false negatives: how precise and complete is it
# in domain, and does fusing two prompts help? Samples (seeded) N hidden positives and N
# non-relevant candidates among the top-2 fused candidates mined against the labelled
# positives alone (what the judge is shown in the `hardneg` rows), judges each with the
# default prompt and with a document-first one (bench/filtering/doc-first.txt), and
# reports AUC, and precision at recall 0.35 / 0.6 / 0.9 for each prompt and for their
# mean (fusion, as Gecko fuses two rankings), with precision corrected to the candidates'
# real share of hidden positives.
#
#   bench/filtering/judge_hidden.sh [SETTING] [N]     (climate-fever, 60)
# Env: WORK (runs/filtering), JUDGE_URL (http://127.0.0.1:8099/v1; start one with
#      SIEVE_LLM_PORT=8099 scripts/llm-server.sh start), SIEVE, MAXLEN (128)
set -euo pipefail
cd "$(dirname "$0")/../.."
SETTING=${1:-climate-fever}; N=${2:-60}
WORK=${WORK:-runs/filtering}/$SETTING
SIEVE=${SIEVE:-target/release/sieve}
JUDGE_URL=${JUDGE_URL:-http://127.0.0.1:8099/v1}
MAXLEN=${MAXLEN:-128}
DATA=$WORK/data
SPARSE=$WORK/mined-sparse.parquet
[ -f "$SPARSE" ] || $SIEVE mine --quiet --dataset "$DATA" --split train-sparse --bm25-k 20 --dense-k 20 \
  --max-seq-length "$MAXLEN" --out "$SPARSE" > "$WORK/mined-sparse.txt"
PAIRS=$WORK/judge-pairs.jsonl
python3 - "$DATA" "$SPARSE" "$N" "$PAIRS" <<'PY'
import csv, json, random, sys
import pyarrow.parquet as pq
data, sparse, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
hidden = set()
with open(f"{data}/hidden.tsv") as f:
    for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
        hidden.add((r["query-id"], r["corpus-id"]))
docs = {}
for line in open(f"{data}/corpus.jsonl"):
    d = json.loads(line)
    docs[d["_id"]] = (d["title"] + " " + d["text"]).strip()
pos, neg = [], []
for row in pq.read_table(sparse, columns=["query_id", "query", "candidates"]).to_pylist():
    for c in sorted(row["candidates"], key=lambda c: c["rank"])[:2]:
        item = {"query_id": row["query_id"], "doc_id": c["doc_id"], "query": row["query"],
                "document": docs[c["doc_id"]]}
        (pos if (row["query_id"], c["doc_id"]) in hidden else neg).append(dict(item, grade=int((row["query_id"], c["doc_id"]) in hidden)))
rng = random.Random(7)
base_rate = len(pos) / (len(pos) + len(neg))
sample = rng.sample(pos, min(n, len(pos))) + rng.sample(neg, min(n, len(neg)))
with open(out, "w") as f:
    for s in sample:
        f.write(json.dumps(s) + "\n")
json.dump({"base_rate": base_rate, "hidden_in_top2": len(pos), "others_in_top2": len(neg)},
          open(out + ".info.json", "w"))
print(f"top-2 candidates: {len(pos)} hidden positives, {len(neg)} others (base rate {base_rate:.3f}); judging {len(sample)}")
PY
for t in default doc-first; do
  tmpl=(); [ "$t" = doc-first ] && tmpl=(--template bench/filtering/doc-first.txt)
  [ -f "$WORK/judge-$t.json" ] || $SIEVE judge calibrate --pairs "$PAIRS" --query-field query --doc-field document \
    --grade-field grade --relevant-grade 1 --precision-target 0.7 --max-doc-tokens 192 --concurrency 4 \
    --endpoint "$JUDGE_URL" --cache "$WORK/judge-verdicts.log" --json "$WORK/judge-$t.json" "${tmpl[@]}" \
    | tee "$WORK/judge-$t.txt"
done
python3 - "$WORK" <<'PY'
import json, sys
work = sys.argv[1]
info = json.load(open(f"{work}/judge-pairs.jsonl.info.json"))
runs = {t: {s["index"]: (s["p_relevant"], s["relevant"]) for s in json.load(open(f"{work}/judge-{t}.json"))["scores"]}
        for t in ("default", "doc-first")}
common = sorted(set(runs["default"]) & set(runs["doc-first"]))
variants = {"default prompt": [runs["default"][i] for i in common],
            "document-first prompt": [runs["doc-first"][i] for i in common],
            "fused (mean P)": [((runs["default"][i][0] + runs["doc-first"][i][0]) / 2, runs["default"][i][1]) for i in common]}
pos_n = sum(1 for i in common if runs["default"][i][1]); neg_n = len(common) - pos_n
w_pos, w_neg = info["base_rate"] / (pos_n / len(common)), (1 - info["base_rate"]) / (neg_n / len(common))
def auc(sc):
    p = [s for s, r in sc if r]; n = [s for s, r in sc if not r]
    return sum((a > b) + 0.5 * (a == b) for a in p for b in n) / max(1, len(p) * len(n))
def at_recall(sc, target):
    """Highest threshold whose recall reaches target: (threshold, recall, precision at the real base rate)."""
    for t in sorted({s for s, _ in sc}, reverse=True):
        tp = sum(1 for s, r in sc if r and s >= t); fp = sum(1 for s, r in sc if not r and s >= t)
        if tp / max(1, pos_n) >= target:
            return t, tp / pos_n, tp * w_pos / max(1e-12, tp * w_pos + fp * w_neg)
    return None
out = {"pairs": len(common), "hidden": pos_n, "others": neg_n, **info, "variants": {}}
print(f"{len(common)} pairs ({pos_n} hidden positives, {neg_n} other top-2 candidates); precision at the real base rate {info['base_rate']:.3f}")
print(f"{'judge':<24} {'AUC':>6} {'P@R0.35':>8} {'P@R0.6':>8} {'P@R0.9':>8}")
for name, sc in variants.items():
    row = {"auc": auc(sc)}
    cells = []
    for r in (0.35, 0.6, 0.9):
        x = at_recall(sc, r)
        row[f"at_recall_{r}"] = x and {"threshold": x[0], "recall": x[1], "precision": x[2]}
        cells.append(f"{x[2]:.3f}" if x else "—")
    out["variants"][name] = row
    print(f"{name:<24} {row['auc']:>6.3f} " + " ".join(f"{c:>8}" for c in cells))
json.dump(out, open(f"{work}/judge-hidden.json", "w"), indent=1)
PY
