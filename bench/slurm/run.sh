#!/usr/bin/env bash
# sieve's scale-out path under a real scheduler, on a one-node Slurm cluster that
# scripts/slurm-local.sh installs and starts (root; Debian's slurm-wlm and munge):
#
#   1. reference: SciFact's train queries mined in one process (this also fills the
#      embedding cache that the array tasks then share);
#   2. `sbatch --array=0-(N-1)`: the same mining, one shard per array task
#      (`sieve mine --shard auto`: the slice comes from SLURM_ARRAY_TASK_ID/_COUNT);
#   3. a dependent array (afterok): each task judges its mined shard against a local
#      llama-server, a few requests each (--max-requests), all tasks appending to one
#      verdict cache at once;
#   4. a dependent job: `sieve merge` of the mined shards and of the labeled shards.
#
# Checks: every array task ran its own shard; the merged mined file is byte-identical
# to the unsharded run; every judged pair was labeled exactly once (verdict-cache lines
# = distinct pairs = judged candidates in the merged labeled file = requests sent).
# Prints the wall time of each stage and appends a row to bench/slurm/results/runs.jsonl.
#
#   bench/slurm/run.sh   env: SLURM_SHARDS (4), JUDGE_BUDGET (requests per judge task, 4),
#                        SIEVE_SLURM_WORK (work directory: a shared filesystem on a real
#                        cluster; default target/bench-slurm)
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
DATA=$(cd "${SCIFACT_DIR:-../shared/data/scifact}" && pwd)
SHARDS=${SLURM_SHARDS:-4}
BUDGET=${JUDGE_BUDGET:-4}
WORK=$(mkdir -p "${SIEVE_SLURM_WORK:-target/bench-slurm}" && cd "${SIEVE_SLURM_WORK:-target/bench-slurm}" && pwd)
rm -rf "$WORK"/{logs,*.parquet,*.parquet.parts,verdicts.log,*.sbatch}
mkdir -p "$WORK/logs"
scripts/fetch-model.sh >&2
scripts/build.sh -q
scripts/slurm-local.sh start
trap '[ -n "${STARTED:-}" ] && SIEVE_LLM_PORT=8097 scripts/llm-server.sh stop' EXIT
SIEVE_LLM_PORT=8097 scripts/llm-server.sh status >/dev/null 2>&1 || STARTED=1
URL=$(SIEVE_LLM_PORT=8097 SIEVE_LLM_MODEL=qwen0.5b SIEVE_LLM_PARALLEL=2 scripts/llm-server.sh)
SIEVE=$REPO/target/release/sieve
MINE="$SIEVE mine --quiet --dataset $DATA --split train --model $REPO/models/all-MiniLM-L6-v2 \
--bm25-k 20 --dense-k 20 --num-negatives 5 --cache-dir $WORK/cache"
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')"; }

t0=$(now)
$MINE --out "$WORK/unsharded.parquet" >/dev/null
t1=$(now)
echo "unsharded mining (reference, fills the embedding cache): $(secs "$t0" "$t1") s"

# One process per task, one core each: the cluster runs as many at once as it has cores.
cat > "$WORK/mine.sbatch" <<EOF
#!/bin/bash
#SBATCH --job-name=sieve-mine --array=0-$((SHARDS - 1)) --cpus-per-task=1 --mem=3000
#SBATCH --output=$WORK/logs/mine-%a.out
export RAYON_NUM_THREADS=1
exec $MINE --shard auto --out $WORK/mined-\$SLURM_ARRAY_TASK_ID.parquet
EOF
cat > "$WORK/judge.sbatch" <<EOF
#!/bin/bash
#SBATCH --job-name=sieve-judge --array=0-$((SHARDS - 1)) --cpus-per-task=1 --mem=1000
#SBATCH --output=$WORK/logs/judge-%a.out
exec $SIEVE judge --quiet --mined $WORK/mined-\$SLURM_ARRAY_TASK_ID.parquet \
  --out $WORK/labeled-\$SLURM_ARRAY_TASK_ID.parquet --cache $WORK/verdicts.log \
  --endpoint $URL --concurrency 1 --max-requests $BUDGET
EOF
cat > "$WORK/merge.sbatch" <<EOF
#!/bin/bash
#SBATCH --job-name=sieve-merge --cpus-per-task=1 --mem=1000 --output=$WORK/logs/merge.out
set -e
$SIEVE merge --out $WORK/mined.parquet $WORK/mined-*.parquet
$SIEVE merge --out $WORK/labeled.parquet $WORK/labeled-*.parquet
EOF
t2=$(now)
mine=$(sbatch --parsable "$WORK/mine.sbatch")
judge=$(sbatch --parsable --dependency="afterok:$mine" --kill-on-invalid-dep=yes "$WORK/judge.sbatch")
merge=$(sbatch --parsable --dependency="afterok:$judge" --kill-on-invalid-dep=yes "$WORK/merge.sbatch")
echo "submitted: mine $mine (array 0-$((SHARDS - 1))), judge $judge (after mine), merge $merge (after judge)"
state() { scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | sort -u | cut -d= -f2 | tr '\n' ' '; }
stage_done=()
while :; do
  for j in "$mine" "$judge"; do
    s=$(state "$j")
    if [[ " ${stage_done[*]} " != *" $j "* ]] && [ -n "$s" ] && ! grep -qE 'PENDING|RUNNING|CONFIGURING|COMPLETING' <<<"$s"; then
      stage_done+=("$j"); echo "  job $j: $s at $(secs "$t2" "$(now)") s"
    fi
  done
  s=$(state "$merge")
  if [ -n "$s" ] && ! grep -qE 'PENDING|RUNNING|CONFIGURING|COMPLETING' <<<"$s"; then break; fi
  if [ -z "$s" ] && ! squeue -h -j "$merge" 2>/dev/null | grep -q .; then break; fi
  sleep 2
done
t3=$(now)
echo "  job $merge: $s at $(secs "$t2" "$t3") s"
for f in "$WORK"/logs/*.out; do
  if grep -qE '^(Error|error)[: ]|panicked' "$f"; then echo "--- $f"; cat "$f"; fi
done
[[ "$s" == *COMPLETED* ]] || { echo "FAIL: the merge job ended $s" >&2; exit 1; }

fail=0
for i in $(seq 0 $((SHARDS - 1))); do
  grep -q "mining shard $i/$SHARDS (SLURM_ARRAY_TASK_ID=$i" "$WORK/logs/mine-$i.out" ||
    { echo "FAIL: array task $i did not mine shard $i/$SHARDS" >&2; fail=1; }
done
if cmp -s "$WORK/unsharded.parquet" "$WORK/mined.parquet"; then
  echo "merged mined file: byte-identical to the unsharded run ($(stat -c %s "$WORK/mined.parquet") bytes)"
else
  echo "FAIL: the merged mined file differs from the unsharded run" >&2; fail=1
fi
[ -x .venv/bin/python ] || scripts/setup-python.sh >&2
.venv/bin/python -c 'import pyarrow' 2>/dev/null || .venv/bin/python -m pip install -q pyarrow >&2
.venv/bin/python - "$WORK" "$SHARDS" "$BUDGET" "$(secs "$t0" "$t1")" "$(secs "$t2" "$t3")" <<'PY' || fail=1
import datetime, json, os, re, subprocess, sys
import pyarrow.parquet as pq
work, shards, budget, t_ref, t_array = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
lines = [l for l in open(f"{work}/verdicts.log") if l.strip()]
keys = [json.loads(l.rsplit("\t", 1)[0])["k"] for l in lines]
rows = pq.read_table(f"{work}/labeled.parquet").to_pylist()
judged = sum(c["p_relevant"] is not None for r in rows for c in r["candidates"])
sent = 0
for i in range(shards):
    m = re.search(r"requests: (\d+) ", open(f"{work}/logs/judge-{i}.out").read())
    sent += int(m.group(1)) if m else 0
ok = len(lines) == len(set(keys)) == judged == sent
print(f"judged pairs: {judged} labeled in the merged file, {len(set(keys))} distinct verdicts in the shared cache "
      f"({len(lines)} lines), {sent} requests sent by {shards} tasks: " + ("each labeled exactly once" if ok else "MISMATCH"))
res = {"date": datetime.date.today().isoformat(),
       "cpu": open("/proc/cpuinfo").read().split("model name")[1].split(":")[1].split("\n")[0].strip() + f" ({os.cpu_count()} cores)",
       "slurm": subprocess.run(["sinfo", "--version"], capture_output=True, text=True).stdout.strip(),
       "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip(),
       "shards": shards, "judge_budget_per_task": budget, "queries": len(rows),
       "unsharded_mine_s": t_ref, "array_mine_judge_merge_s": t_array,
       "judged": judged, "cache_lines": len(lines), "requests": sent, "labeled_once": ok}
os.makedirs("bench/slurm/results", exist_ok=True)
with open("bench/slurm/results/runs.jsonl", "a") as f:
    f.write(json.dumps(res) + "\n")
sys.exit(0 if ok else 1)
PY
[ "$fail" = 0 ] && echo "slurm scale-out: all checks passed" || { echo "slurm scale-out: FAILED" >&2; exit 1; }
