#!/usr/bin/env bash
# Training throughput and peak memory, sieve vs sentence-transformers on PyTorch CPU: same
# model (all-MiniLM-L6-v2), same SciFact train pairs (query, title + " " + abstract), same
# batch size, sequence length and machine, alternating runs; prints medians and ratios.
#
#   1. in-batch softmax, batch 32:      sieve train            vs MultipleNegativesRankingLoss
#      (and sieve with SIEVE_PACKING=off: its batches padded as sentence-transformers pads them)
#   2. GradCache, batch 128, mini 32:   sieve --mini-batch-size vs CachedMultipleNegativesRankingLoss
#   3. memory: sieve at batch 256 with GradCache mini-batch 32 against batch 32 without
#
#   bench/train/run.sh [REPEATS=1] [STEPS=4] [SEQ=256]
set -euo pipefail
cd "$(dirname "$0")/../.."
REPEATS=${1:-1}
STEPS=${2:-4}
SEQ=${3:-256}
MODEL=models/all-MiniLM-L6-v2
scripts/fetch-model.sh >&2
[ -x .venv/bin/python ] || scripts/setup-python.sh >&2
scripts/build.sh -q
PAIRS=target/bench-train-pairs.jsonl
python3 - "${SCIFACT:-../shared/data/scifact}" "$PAIRS" <<'PY'
import gzip, json, sys
root, out = sys.argv[1], sys.argv[2]
docs = {}
with gzip.open(f"{root}/corpus.jsonl.gz", "rt") as f:
    for l in f:
        d = json.loads(l); docs[d["_id"]] = (d.get("title", "") + " " + d.get("text", "")).strip()
queries = {json.loads(l)["_id"]: json.loads(l)["text"] for l in open(f"{root}/queries.jsonl")}
seen = set()
with open(out, "w") as o:
    for i, l in enumerate(open(f"{root}/qrels/train.tsv")):
        if i == 0: continue
        q, d, s = l.rstrip("\n").split("\t")
        if int(s) > 0 and q not in seen:   # one pair per query: no repeated text in a batch
            seen.add(q)
            o.write(json.dumps({"query": queries[q], "positive": docs[d]}) + "\n")
PY
OUT=target/bench-train.jsonl
: > "$OUT"
sieve_run() { # label batch mini steps seq
  local label=$1 batch=$2 mini=$3 steps=$4 seq=$5 dir
  dir=$(mktemp -d)
  local extra=()
  [ "$mini" != 0 ] && extra=(--mini-batch-size "$mini")
  /usr/bin/time -f '%M' -o "$dir/rss" target/release/sieve train --model "$MODEL" --data "$PAIRS" \
    --output "$dir/out" --batch-size "$batch" "${extra[@]}" --max-seq-length "$seq" \
    --max-steps $((steps + 1)) --save-every 0 --num-negatives 0 --quiet >/dev/null 2>"$dir/err" ||
    { cat "$dir/err" >&2; exit 1; }
  python3 - "$dir/out/metrics.jsonl" "$(cat "$dir/rss")" "$label" "$batch" "$mini" "$seq" <<'PY' >> "$OUT"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l][1:]
secs = sum(r["seconds"] for r in rows); pairs = sum(r["pairs"] for r in rows)
print(json.dumps({"tool": "sieve", "loss": sys.argv[3], "batch": int(sys.argv[4]), "mini": int(sys.argv[5]),
                  "seq": int(sys.argv[6]), "pairs_per_s": pairs / secs, "s_per_step": secs / len(rows),
                  "peak_rss_mib": int(sys.argv[2]) / 1024}))
PY
  rm -rf "$dir"
}
st_run() { # loss batch mini steps seq
  OMP_NUM_THREADS=$(nproc) OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/train/st_train.py \
    "$MODEL" "$PAIRS" "$1" "$2" "$3" "$5" "$4" 2>/dev/null >> "$OUT"
}
for i in $(seq "$REPEATS"); do
  echo "run $i/$REPEATS: in-batch, batch 32" >&2
  sieve_run mnrl 32 0 "$STEPS" "$SEQ"; st_run mnrl 32 0 "$STEPS" "$SEQ"
  # The same build with padded batches, as sentence-transformers pads them.
  SIEVE_PACKING=off sieve_run mnrl-padded 32 0 "$STEPS" "$SEQ"
  echo "run $i/$REPEATS: GradCache, batch 128, mini 32" >&2
  sieve_run cached 128 32 "$STEPS" "$SEQ"; st_run cached 128 32 "$STEPS" "$SEQ"
done
echo "memory: batch 32 plain vs batch 256 GradCache mini 32 (2 steps, seq 128)" >&2
sieve_run mem-plain 32 0 1 128
sieve_run mem-cached 256 32 1 128
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def med(tool, loss, key):
    v = [r[key] for r in rows if r["tool"] == tool and r["loss"] == loss]
    return statistics.median(v) if v else float("nan")
print(f"{'work':<42} {'sieve':>12} {'sentence-transformers':>22} {'ratio':>7}   peak RSS sieve / ST")
for loss, label in (("mnrl", "MNRL, batch 32"), ("cached", "CachedMNRL, batch 128, mini 32")):
    s, p = med("sieve", loss, "pairs_per_s"), med("sentence-transformers", loss, "pairs_per_s")
    print(f"{label:<42} {s:>8.2f} p/s {p:>18.2f} p/s {s / p:>6.2f}x   "
          f"{med('sieve', loss, 'peak_rss_mib'):.0f} / {med('sentence-transformers', loss, 'peak_rss_mib'):.0f} MiB")
s, p = med("sieve", "mnrl-padded", "pairs_per_s"), med("sentence-transformers", "mnrl", "pairs_per_s")
print(f"{'MNRL, batch 32, sieve padded (SIEVE_PACKING=off)':<42} {s:>8.2f} p/s {p:>18.2f} p/s {s / p:>6.2f}x")
a, b = med("sieve", "mem-plain", "peak_rss_mib"), med("sieve", "mem-cached", "peak_rss_mib")
print(f"sieve peak RSS: batch 32 plain {a:.0f} MiB, batch 256 GradCache mini 32 {b:.0f} MiB: {b / a:.2f}x (target <= 1.3x)")
PY
