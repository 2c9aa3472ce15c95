"""The real judge on a benchmark's real false negatives, from `sieve judge calibrate --json`
files (bench/filtering/judge_train.sh): AUC, and precision / recall at the threshold
calibrated on LiveQA-Med, for the default prompt, the document-first prompt and their
fusion (mean P, as Gecko fuses two prompts' rankings); and a cascade-free comparison at
equal recall. Writes each judge's verdicts at its LiveQA-Med threshold as judged qrels
($WORK/judged-judge-<name>.tsv, with a .json of its precision and recall against the
oracle) for run.sh's `judge-<name>` arms.

    python3 bench/filtering/judge_report.py --work runs/filtering/climate-fever \
        --pairs runs/filtering/climate-fever/judge-train-pairs.jsonl --out judge-train.md
"""
import argparse, csv, json


def load_scores(path):
    d = json.load(open(path))
    s = sorted(d["scores"], key=lambda r: r["index"])
    return d, [r["p_relevant"] for r in s], [bool(r["relevant"]) for r in s]


def auc(p, y):
    # Mann-Whitney U with ties counted half: the probability a relevant pair outscores an
    # irrelevant one.
    pos = [a for a, t in zip(p, y) if t]
    neg = [a for a, t in zip(p, y) if not t]
    if not pos or not neg:
        return float("nan")
    order = sorted(neg)
    import bisect
    u = 0.0
    for a in pos:
        lo = bisect.bisect_left(order, a)
        hi = bisect.bisect_right(order, a)
        u += lo + 0.5 * (hi - lo)
    return u / (len(pos) * len(neg))


def at(p, y, t):
    tp = sum(1 for a, r in zip(p, y) if a >= t and r)
    fp = sum(1 for a, r in zip(p, y) if a >= t and not r)
    pos = sum(y)
    return {"threshold": t, "precision": tp / (tp + fp) if tp + fp else None,
            "recall": tp / pos if pos else None, "flagged": tp + fp, "tp": tp, "fp": fp}


def threshold_for_precision(p, y, target):
    # The lowest threshold (most recall) whose precision reaches the target; None when no
    # threshold does. Candidate thresholds are the scores themselves.
    best = None
    for t in sorted(set(p)):
        r = at(p, y, t)
        if r["precision"] is not None and r["precision"] >= target:
            best = t
            break
    return best


def precision_at_recall(p, y, recall):
    pos = sum(y)
    ranked = sorted(zip(p, y), key=lambda z: -z[0])
    tp = 0
    for i, (_, r) in enumerate(ranked, 1):
        tp += r
        if tp >= recall * pos:
            return tp / i
    return None


ap = argparse.ArgumentParser()
ap.add_argument("--work", required=True)
ap.add_argument("--pairs", required=True)
ap.add_argument("--out", required=True)
ap.add_argument("--target", type=float, default=None,
                help="LiveQA-Med precision target (default: the one the calibrate files used)")
a = ap.parse_args()

pairs = [json.loads(l) for l in open(a.pairs)]
hidden_total = sum(1 for _ in open(f"{a.work}/data/hidden.tsv")) - 1
judges = {}
for name in ("default", "doc-first"):
    d, p, y = load_scores(f"{a.work}/judge-train-{name}.json")
    lq, lp, ly = load_scores(f"{a.work}/judge-liveqa-{name}.json")
    assert len(p) == len(pairs), f"{name}: {len(p)} scores for {len(pairs)} pairs"
    judges[name] = (p, y, lp, ly, lq)
target = a.target if a.target is not None else judges["default"][4]["precision_target"]
p0, y0, lp0, ly0, _ = judges["default"]
p1, y1, lp1, ly1, _ = judges["doc-first"]
assert y0 == y1 and ly0 == ly1, "the two prompts were not run on the same pairs"
judges["fused"] = ([(a_ + b) / 2 for a_, b in zip(p0, p1)], y0,
                   [(a_ + b) / 2 for a_, b in zip(lp0, lp1)], ly0, None)

base_rate = sum(y0) / len(y0)
lines = [f"{len(pairs)} pairs (the top-2 candidates of every training query), {sum(y0)} hidden positives "
         f"(base rate {base_rate:.3f}); {hidden_total} hidden positives in all. LiveQA-Med: "
         f"{len(ly0)} pairs, {sum(ly0)} relevant; thresholds at LiveQA-Med precision ≥ {target}.",
         "",
         "| judge | AUC | AUC (LiveQA-Med) | threshold | flagged | precision | recall (top-2) | recall (all hidden) | P@R0.35 | P@R0.6 |",
         "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
summary = {}
for name, (p, y, lp, ly, _) in judges.items():
    t = threshold_for_precision(lp, ly, target)
    note = ""
    if t is None:
        # Unreachable on LiveQA-Med: take the best-accuracy threshold there instead, and say so.
        best = max(sorted(set(lp)), key=lambda th: sum((a_ >= th) == r for a_, r in zip(lp, ly)))
        t, note = best, " (target unreachable; best accuracy)"
    r = at(p, y, t)
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
    rec_all = r["tp"] / hidden_total
    lines.append(f"| {name} | {auc(p, y):.3f} | {auc(lp, ly):.3f} | {t:.4f}{note} | {r['flagged']} | "
                 f"{fmt(r['precision'])} | {fmt(r['recall'])} | {rec_all:.3f} | "
                 f"{fmt(precision_at_recall(p, y, 0.35))} | {fmt(precision_at_recall(p, y, 0.6))} |")
    out = f"{a.work}/judged-judge-{name}.tsv"
    with open(out, "w") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["query-id", "corpus-id", "score"])
        for pair, s in zip(pairs, p):
            if s >= t:
                w.writerow([pair["query_id"], pair["doc_id"], 1])
    info = {"judge": f"qwen2.5-coder-0.5b, {name} prompt", "threshold": t, "threshold_from": "LiveQA-Med" + note,
            "precision": r["precision"], "recall": rec_all, "recall_top2": r["recall"],
            "masks": r["flagged"], "correct": r["tp"], "wrong": r["fp"], "auc": auc(p, y)}
    json.dump(info, open(out + ".json", "w"), indent=1)
    summary[name] = info
# Is fusion's AUC gain more than noise? A paired bootstrap over pairs (the same resampled
# pairs for both judges), 2,000 seeded resamples: the 95% interval of the AUC difference.
import random


def auc_diff_interval(pa, pb, y, trials=2000, seed=11):
    rng = random.Random(seed)
    n = len(y)
    diffs = []
    for _ in range(trials):
        idx = [rng.randrange(n) for _ in range(n)]
        ys = [y[i] for i in idx]
        diffs.append(auc([pa[i] for i in idx], ys) - auc([pb[i] for i in idx], ys))
    diffs.sort()
    return auc(pa, y) - auc(pb, y), diffs[int(0.025 * trials)], diffs[int(0.975 * trials) - 1]


lines += ["", "AUC differences, paired bootstrap over pairs (2,000 resamples), 95% interval:", ""]
for domain, k_p, k_y in (("Climate-FEVER top-2", 0, 1), ("LiveQA-Med", 2, 3)):
    for other in ("default", "doc-first"):
        d, lo, hi = auc_diff_interval(judges["fused"][k_p], judges[other][k_p], judges["default"][k_y])
        lines.append(f"- {domain}: fused − {other} = {d:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        summary[f"fused_minus_{other}_{'cf' if k_p == 0 else 'liveqa'}"] = {"diff": d, "lo": lo, "hi": hi}

# The cascade: the 0.5B judge (default prompt) screens, the 1.5B judge confirms only what
# passes, on the seeded sample the 1.5B judged (judge_train.sh). Cost is counted in 0.5B
# requests, a 1.5B request as 3 (its prompt time per token on this CPU).
large_path = f"{a.work}/judge-train-large.json"
import os
if os.path.exists(large_path):
    sample = [json.loads(l) for l in open(f"{a.work}/judge-train-sample.jsonl")]
    _, pl, yl = load_scores(large_path)
    assert len(pl) == len(sample), "the 1.5B judge left pairs unjudged"
    idx = [r["pair_index"] for r in sample]
    ps = [judges["default"][0][i] for i in idx]
    pf = [judges["fused"][0][i] for i in idx]
    ys = [judges["default"][1][i] for i in idx]
    assert ys == yl
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
    lines += ["", f"The cascade, on a seeded sample of {len(sample)} of these pairs ({sum(ys)} hidden positives), "
              "which Qwen2.5-Coder-1.5B judged too (default prompt). Cost: requests per pair, a 1.5B request "
              "counted as 3 of the 0.5B's.", "",
              "| judge | AUC | P@R0.35 | P@R0.6 | cost per pair |", "|---|---:|---:|---:|---:|"]
    for name, p, cost in (("0.5B, default prompt", ps, 1.0), ("0.5B, two prompts fused", pf, 2.0),
                          ("1.5B, default prompt", pl, 3.0)):
        lines.append(f"| {name} | {auc(p, ys):.3f} | {fmt(precision_at_recall(p, ys, 0.35))} | "
                     f"{fmt(precision_at_recall(p, ys, 0.6))} | {cost:.1f} |")
    pos = sum(ys)
    for keep in (0.9, 0.75):
        # Screen: the 0.5B threshold that keeps this share of the hidden positives.
        ranked = sorted(ps, reverse=True)
        tp, thr = 0, ranked[-1]
        for s_ in ranked:
            pass_pos = sum(1 for a_, r in zip(ps, ys) if a_ >= s_ and r)
            if pass_pos >= keep * pos:
                thr = s_
                break
        passed = [a_ >= thr for a_ in ps]
        share = sum(passed) / len(passed)
        # Inside the screen, the 1.5B ranks; what failed the screen is never flagged.
        pc = [b if ok else -1.0 for b, ok in zip(pl, passed)]
        lines.append(f"| cascade: 0.5B keeps {keep:.0%} of positives ({share:.0%} of pairs pass), 1.5B confirms | "
                     f"{auc(pc, ys):.3f} | {fmt(precision_at_recall(pc, ys, 0.35))} | "
                     f"{fmt(precision_at_recall(pc, ys, 0.6))} | {1 + 3 * share:.1f} |")
        summary[f"cascade_{keep}"] = {"pass_share": share, "auc": auc(pc, ys),
                                      "p_at_r035": precision_at_recall(pc, ys, 0.35)}
    summary["large"] = {"auc": auc(pl, ys), "p_at_r035": precision_at_recall(pl, ys, 0.35),
                        "p_at_r06": precision_at_recall(pl, ys, 0.6), "sample": len(sample)}
lines += ["", "Precision is measured against the benchmark's oracle (every hidden positive); recall (top-2) "
          "counts the hidden positives among the judged pairs, recall (all hidden) every hidden positive "
          "of the training queries, most of which no top-2 candidate list contains."]
open(a.out, "w").write("\n".join(lines) + "\n")
json.dump(summary, open(a.out.replace(".md", ".json"), "w"), indent=1)
