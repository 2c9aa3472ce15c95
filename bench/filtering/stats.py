"""Per-query scores and the paired randomization test shared by the filtering reports."""
import csv
import json
import os
import random


def per_query(result, metric="ndcg_at_10"):
    """`metric` per query of a result JSON, from the `.per-query.jsonl` sieve writes beside it,
    or, where runs/ is gone (a new machine), from the copy export_results.py committed:
    runs/W/S/results/NAME/S-test[-sparse].json -> bench/filtering/results/W/S/per-query/NAME[-sparse].tsv."""
    path = result[: -len(".json")] + ".per-query.jsonl"
    out = {}
    if os.path.exists(path):
        for line in open(path):
            v = json.loads(line)
            out[v["query_id"]] = v[metric]
        return out
    parts = os.path.normpath(result).split(os.sep)
    if len(parts) < 5 or parts[-3] != "results":
        raise FileNotFoundError(f"{path}: no per-query scores, and {result} is not a run's result")
    work, setting, name = parts[-5], parts[-4], parts[-2]
    suffix = "-sparse" if parts[-1].endswith("-sparse.json") else ""
    tsv = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", work, setting,
                       "per-query", f"{name}{suffix}.tsv")
    if not os.path.exists(tsv):
        raise FileNotFoundError(f"{path}: no per-query scores, and no committed copy at {tsv}")
    with open(tsv) as f:
        for r in csv.DictReader(f, delimiter="\t"):
            out[r["query_id"]] = float(r[metric])
    return out


def paired(a_scores, b_scores, trials, seed=0):
    """Mean difference a - b over the shared queries, its two-sided p-value from `trials`
    seeded sign flips (as `sieve report` computes it), and the number of queries."""
    keys = sorted(set(a_scores) & set(b_scores))
    d = [a_scores[k] - b_scores[k] for k in keys]
    obs = abs(sum(d))
    tol = 1e-12 * max(1.0, sum(abs(x) for x in d))
    rng = random.Random(seed)
    extreme = 0
    for _ in range(trials):
        s = sum(x if rng.random() < 0.5 else -x for x in d)
        if abs(s) >= obs - tol:
            extreme += 1
    return sum(d) / max(1, len(d)), (extreme + 1) / (trials + 1), len(d)
