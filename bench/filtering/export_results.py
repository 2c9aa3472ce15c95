"""Copies the filtering manifests and each run's per-query scores from runs/ into
bench/filtering/results/ (what docs/filtering.md's paired tests rest on; the models are
not kept), so that a later session on a new machine can continue the grid and rerun the
report: copy a manifest back to runs/<work>/<setting>/manifest.jsonl and run.sh skips
every run in it.

    python3 bench/filtering/export_results.py runs/filtering/*/manifest.jsonl \
        runs/filtering-long/*/manifest.jsonl
"""
import json, os, shutil, sys

for m in sys.argv[1:]:
    work, setting = os.path.split(os.path.dirname(m))
    dest = os.path.join("bench/filtering/results", os.path.basename(work), setting)
    os.makedirs(os.path.join(dest, "per-query"), exist_ok=True)
    shutil.copyfile(m, os.path.join(dest, "manifest.jsonl"))
    n = 0
    for line in open(m):
        if not line.strip():
            continue
        r = json.loads(line)
        name = r["run"].replace(":", "_")
        for key, suffix in (("result", ""), ("result_sparse", "-sparse")):
            src = r[key][: -len(".json")] + ".per-query.jsonl"
            with open(os.path.join(dest, "per-query", f"{name}{suffix}.tsv"), "w") as f:
                f.write("query_id\tndcg_at_10\trecall_at_100\n")
                for q in open(src):
                    v = json.loads(q)
                    f.write(f"{v['query_id']}\t{v['ndcg_at_10']:.6f}\t{v['recall_at_100']:.6f}\n")
        n += 1
    # The real judge's measurements (bench/filtering/judge_train.sh): every pair's score per
    # prompt and model, the report, and the verdicts the judge-* arms trained on.
    src_dir = os.path.dirname(m)
    judged = [f for f in sorted(os.listdir(src_dir))
              if (f.startswith(("judge-train", "judge-liveqa")) and f.endswith((".json", ".md")))
              or f.startswith("judged-judge-")]
    if judged:
        os.makedirs(os.path.join(dest, "judge"), exist_ok=True)
        for f in judged:
            shutil.copyfile(os.path.join(src_dir, f), os.path.join(dest, "judge", f))
    print(f"{dest}: {n} runs, {len(judged)} judge files")
