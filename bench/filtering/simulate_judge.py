"""A simulated judge with a chosen precision and recall, from a benchmark's oracle.

    python3 bench/filtering/simulate_judge.py --benchmark DIR --mined MINED.parquet \
        --precision 0.7 --recall 0.6 --out judged.tsv [--seed 1] [--hard-rank 10]

Keeps a seeded `recall` share of the oracle's hidden positives (DIR/hidden.tsv) as the
judge's true positives, and adds wrong verdicts until `precision` holds: (query, candidate)
pairs drawn uniformly from the mined candidates ranked at most --hard-rank (`sieve mine`
keeps every known positive out of them, so each is a real non-relevant document, and a hard
one: where a real judge errs). Writes a qrels TSV for `sieve train --judged-qrels` and prints
the achieved precision and recall.
"""
import argparse, csv, json, random
import pyarrow.parquet as pq

ap = argparse.ArgumentParser()
ap.add_argument("--benchmark", required=True)
ap.add_argument("--mined", required=True)
ap.add_argument("--precision", type=float, required=True)
ap.add_argument("--recall", type=float, required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--hard-rank", type=int, default=10)
a = ap.parse_args()
assert 0 < a.precision <= 1 and 0 <= a.recall <= 1

rng = random.Random(a.seed)
with open(f"{a.benchmark}/hidden.tsv") as f:
    hidden = [(r["query-id"], r["corpus-id"]) for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]
hidden.sort()
rng.shuffle(hidden)
tp = hidden[: round(a.recall * len(hidden))]
wrong_n = round(len(tp) * (1 - a.precision) / a.precision)
pool = []
for row in pq.read_table(a.mined, columns=["query_id", "candidates"]).to_pylist():
    for c in row["candidates"]:
        if c["rank"] <= a.hard_rank:
            pool.append((row["query_id"], c["doc_id"]))
pool.sort()
oracle = set(hidden)
pool = [p for p in pool if p not in oracle]
if wrong_n > len(pool):
    raise SystemExit(f"need {wrong_n} wrong verdicts, only {len(pool)} hard candidates: raise --hard-rank")
wrong = rng.sample(pool, wrong_n)
pairs = sorted(set(tp) | set(wrong))
with open(a.out, "w") as f:
    f.write("query-id\tcorpus-id\tscore\n")
    for q, d in pairs:
        f.write(f"{q}\t{d}\t1\n")
hits = sum(1 for p in pairs if p in oracle)
print(json.dumps({"pairs": len(pairs), "true": hits, "wrong": len(pairs) - hits,
                  "precision": hits / max(1, len(pairs)), "recall": hits / max(1, len(hidden)),
                  "hidden": len(hidden)}))
