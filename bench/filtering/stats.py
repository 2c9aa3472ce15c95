"""Per-query scores and the paired randomization test shared by the filtering reports."""
import json
import random


def per_query(result, metric="ndcg_at_10"):
    """`metric` per query of a result JSON, from the `.per-query.jsonl` sieve writes beside it."""
    path = result[: -len(".json")] + ".per-query.jsonl"
    out = {}
    for line in open(path):
        v = json.loads(line)
        out[v["query_id"]] = v[metric]
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
