"""Distillation from the judge beside masking, from the filtering manifests: every
`*-distill` (and `*-distill-only`) hardneg run against its masking twin (the same labels, masked only:
oracle-distill vs oracle-mask, simP-R-distill vs simP-R) and against no mask, with paired
randomization tests of per-query nDCG@10 (10,000 seeded sign flips, two-sided).

    python3 bench/filtering/distill_report.py runs/filtering/*/manifest.jsonl
"""
import argparse, json

from stats import paired, per_query

ap = argparse.ArgumentParser()
ap.add_argument("manifests", nargs="+")
ap.add_argument("--trials", type=int, default=10000)
a = ap.parse_args()
rows = {}
for m in a.manifests:
    for line in open(m):
        if line.strip():
            r = json.loads(line)
            rows[(r["setting"], r["run"])] = r
fmt_p = lambda p: "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
print("| setting | scale | distilled labels | nDCG@10 | Δ vs masking the same labels (p) | Δ vs no mask (p) | Recall@100 | nDCG@10 sparse | train s |")
print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
for (setting, run), r in sorted(rows.items()):
    if not run.endswith(("-distill", "-distill-only")):
        continue
    denom, scale, arm = run.split(":")
    only = arm.endswith("-distill-only")
    labels = arm[: -len("-distill-only" if only else "-distill")]
    mask_arm = "oracle-mask" if labels == "oracle" else labels
    cells = []
    for twin_run in (f"{denom}:{scale}:{mask_arm}", f"{denom}:{scale}:none"):
        t = rows.get((setting, twin_run))
        if t is None:
            cells.append("—")
            continue
        d, p, n = paired(per_query(r["result"]), per_query(t["result"]), a.trials)
        cells.append(f"{d:+.4f} ({fmt_p(p)}; {t['ndcg_at_10']:.4f})")
    print(f"| {setting} | {scale} | {labels}{' (distillation alone)' if only else ''} | {r['ndcg_at_10']:.4f} | {cells[0]} | {cells[1]} "
          f"| {r['recall_at_100']:.4f} | {r['ndcg_at_10_sparse']:.4f} | {r['train_seconds']:.0f} |")
