#!/usr/bin/env bash
# sieve on a Slurm cluster: mine in an array of N tasks, judge each mined shard in a
# dependent array (all tasks appending to one verdict cache), then merge. Everything
# lives on a filesystem every node mounts (SHARED). Submit from a login node:
#
#   SHARED=/shared/sieve N=16 JUDGE=http://judge-1:8000/v1 examples/slurm/mine-judge-merge.sh
#
# Several judge servers: repeat --endpoint in the judge step; a failing one is rested
# and its requests go to the others. bench/slurm/run.sh runs this same flow on a
# one-node test cluster and checks it.
set -euo pipefail
SHARED=${SHARED:?a directory every node mounts}
N=${N:-16}
JUDGE=${JUDGE:?the judge server, e.g. http://judge-1:8000/v1}
DATA=${DATA:-$SHARED/data/scifact}
MODEL=${MODEL:-$SHARED/models/all-MiniLM-L6-v2}
mkdir -p "$SHARED/logs" "$SHARED/shards"

mine=$(sbatch --parsable --job-name=sieve-mine --array=0-$((N - 1)) --cpus-per-task=8 --mem=16G \
  --output="$SHARED/logs/mine-%a.out" --wrap "sieve mine --dataset $DATA --split train \
  --model $MODEL --cache-dir $SHARED/cache --shard auto \
  --out $SHARED/shards/mined-\$SLURM_ARRAY_TASK_ID.parquet")

judge=$(sbatch --parsable --job-name=sieve-judge --array=0-$((N - 1)) --cpus-per-task=1 --mem=2G \
  --dependency="afterok:$mine" --kill-on-invalid-dep=yes --output="$SHARED/logs/judge-%a.out" \
  --wrap "sieve judge --mined $SHARED/shards/mined-\$SLURM_ARRAY_TASK_ID.parquet \
  --out $SHARED/shards/labeled-\$SLURM_ARRAY_TASK_ID.parquet \
  --cache $SHARED/verdicts.log --endpoint $JUDGE --concurrency 16")

merge=$(sbatch --parsable --job-name=sieve-merge --cpus-per-task=1 --mem=8G \
  --dependency="afterok:$judge" --kill-on-invalid-dep=yes --output="$SHARED/logs/merge.out" \
  --wrap "sieve merge --out $SHARED/labeled.parquet $SHARED/shards/labeled-*.parquet")

echo "mine $mine -> judge $judge -> merge $merge; then: sieve train --data $SHARED/labeled.parquet"
echo "(or train on the shards without merging: sieve train --data '$SHARED/shards/labeled-*.parquet')"
