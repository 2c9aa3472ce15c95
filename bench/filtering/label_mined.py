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
"""
import argparse, csv, json
import pyarrow as pa
import pyarrow.parquet as pq

ap = argparse.ArgumentParser()
ap.add_argument("--mined", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--relevant")
a = ap.parse_args()
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
        c["p_relevant"] = 1.0 if lab == "relevant" else 0.0
        counts[lab] += 1
meta = {k: v for k, v in (pq.ParquetFile(a.mined).metadata.metadata or {}).items() if k.startswith(b"sieve.")}
out = pa.Table.from_pylist(rows, schema=t.schema).replace_schema_metadata(meta)
pq.write_table(out, a.out)
print(json.dumps(counts))
