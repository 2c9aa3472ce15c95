"""A simulated graded judge: every mined candidate gets a P(relevant), drawn around 0.6 for
the benchmark's hidden positives and around 0.3 for the rest (normal, sd 0.25, clipped to
[0.001, 0.999], seeded), so the scores rank relevant above non-relevant with an AUC near
0.8 (the real local judge's LiveQA-Med AUC is 0.755), and label = P >= 0.5. The teacher for
distillation when no judge has run; masking uses the labels.

    python3 bench/filtering/score_mined.py --benchmark DIR --mined MINED.parquet --out labeled.parquet

Keeps the file's schema and `sieve.*` metadata; prints the achieved AUC, precision and recall.
"""
import argparse, csv, json, random
import pyarrow as pa
import pyarrow.parquet as pq

ap = argparse.ArgumentParser()
ap.add_argument("--benchmark", required=True)
ap.add_argument("--mined", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--seed", type=int, default=7)
ap.add_argument("--relevant-mean", type=float, default=0.6)
ap.add_argument("--other-mean", type=float, default=0.3)
ap.add_argument("--sd", type=float, default=0.25)
a = ap.parse_args()
with open(f"{a.benchmark}/hidden.tsv") as f:
    hidden = {(r["query-id"], r["corpus-id"]) for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)}
rng = random.Random(a.seed)
t = pq.read_table(a.mined)
rows = t.to_pylist()
pos, neg = [], []
for row in rows:
    for c in row["candidates"]:
        rel = (row["query_id"], c["doc_id"]) in hidden
        p = min(0.999, max(0.001, rng.gauss(a.relevant_mean if rel else a.other_mean, a.sd)))
        c["p_relevant"] = p
        c["label"] = "relevant" if p >= 0.5 else "irrelevant"
        (pos if rel else neg).append(p)
meta = {k: v for k, v in (pq.ParquetFile(a.mined).metadata.metadata or {}).items() if k.startswith(b"sieve.")}
pq.write_table(pa.Table.from_pylist(rows, schema=t.schema).replace_schema_metadata(meta), a.out)
# AUC: the chance a hidden positive outscores a non-relevant candidate (sampled pairs).
pairs = [(rng.choice(pos), rng.choice(neg)) for _ in range(200000)] if pos and neg else []
auc = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x, y in pairs) / max(1, len(pairs))
tp = sum(p >= 0.5 for p in pos)
fp = sum(p >= 0.5 for p in neg)
print(json.dumps({"candidates": len(pos) + len(neg), "hidden_among_them": len(pos), "auc": auc,
                  "precision": tp / max(1, tp + fp), "recall": tp / max(1, len(pos))}))
