"""Labels a mined file's candidates from a benchmark's oracle or a judged-qrels file, for
training with mined hard negatives (the RocketQA setting: hard negatives mined against
sparse labels are full of false negatives).

    python3 bench/filtering/label_mined.py --mined MINED.parquet --out labeled.parquet \
        [--relevant judged.tsv]

Every candidate becomes `irrelevant` (a hard negative for `sieve train --num-negatives K`)
except the (query, document) pairs listed in --relevant (a qrels TSV: the oracle's
hidden.tsv, or a simulated judge's verdicts), which become `relevant`: masked, or made
positive, by --false-negatives. Without --relevant, every hidden positive the miner found
stays a hard negative (no filtering). Keeps the file's schema and `sieve.*` metadata.

With --scores PAIRS.jsonl JSON [JSON ...] (bench/filtering/judge_train.sh's pairs file and the
`sieve judge calibrate --json` files written over it, one per prompt) every judged candidate's
`p_relevant` is the real judge's P(relevant), averaged over the files (the fused judge), and
every other candidate's is null: the teacher of `--distill-weight` scores only what the judge
saw, and the rest stay out of distillation. The labels still come from --relevant alone.
"""
import argparse, csv, json
import pyarrow as pa
import pyarrow.parquet as pq

ap = argparse.ArgumentParser()
ap.add_argument("--mined", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--relevant")
ap.add_argument("--scores", nargs="+", metavar="PAIRS_THEN_JSON")
a = ap.parse_args()
scores = None
if a.scores:
    if len(a.scores) < 2:
        ap.error("--scores takes the pairs file, then one or more `sieve judge calibrate --json` files")
    pairs = [json.loads(line) for line in open(a.scores[0])]
    sums = {}
    for path in a.scores[1:]:
        # A pair the judge failed on has no score in the file: it stays unscored here.
        for s in json.load(open(path))["scores"]:
            if not 0 <= s["index"] < len(pairs):
                raise SystemExit(f"{path}: score {s['index']} is past the {len(pairs)} pairs of {a.scores[0]}")
            pair = pairs[s["index"]]
            if bool(pair["grade"]) != s["relevant"]:
                raise SystemExit(f"{path}: score {s['index']} does not belong to line {s['index'] + 1} of {a.scores[0]}")
            sums.setdefault((pair["query_id"], pair["doc_id"]), []).append(s["p_relevant"])
    scores = {k: sum(v) / len(v) for k, v in sums.items()}
rel = set()
if a.relevant:
    with open(a.relevant) as f:
        for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            rel.add((r["query-id"], r["corpus-id"]))
t = pq.read_table(a.mined)
rows = t.to_pylist()
counts = {"relevant": 0, "irrelevant": 0}
for row in rows:
    for c in row["candidates"]:
        lab = "relevant" if (row["query_id"], c["doc_id"]) in rel else "irrelevant"
        c["label"] = lab
        if scores is None:
            c["p_relevant"] = 1.0 if lab == "relevant" else 0.0
        else:
            c["p_relevant"] = scores.get((row["query_id"], c["doc_id"]))
            counts["scored"] = counts.get("scored", 0) + (c["p_relevant"] is not None)
        counts[lab] += 1
meta = {k: v for k, v in (pq.ParquetFile(a.mined).metadata.metadata or {}).items() if k.startswith(b"sieve.")}
out = pa.Table.from_pylist(rows, schema=t.schema).replace_schema_metadata(meta)
pq.write_table(out, a.out)
print(json.dumps(counts))
