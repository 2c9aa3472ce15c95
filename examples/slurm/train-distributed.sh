#!/usr/bin/env bash
# Data-parallel training on Slurm: one `sieve train --distributed` per GPU, across NODES
# nodes of GPUS GPUs each. srun starts the tasks and gives each SLURM_PROCID (its rank),
# SLURM_NTASKS (the world) and SLURM_LOCALID (its GPU on the node); rank 0 hands the
# NCCL id to the others at MASTER_ADDR (the first node of the allocation), port MASTER_PORT+1.
# Every rank trains on the same global batches (--batch-size is the whole batch, split
# among the GPUs) and the softmax spans all of it; rank 0 writes OUT, on a filesystem
# every node mounts, so --resume works after a requeue. Needs a sieve built with
# `--features nccl` (scripts/build-cuda.sh) and libnccl on the nodes (a PyTorch install
# carries it in site-packages/nvidia/nccl/lib).
#
#   SHARED=/shared/sieve NODES=2 GPUS=8 examples/slurm/train-distributed.sh
#
# Under torchrun-style launchers set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
# MASTER_PORT instead; sieve reads those first.
set -euo pipefail
SHARED=${SHARED:?a directory every node mounts}
NODES=${NODES:-1}
GPUS=${GPUS:-8}
DATA=${DATA:-$SHARED/labeled.parquet}
MODEL=${MODEL:-$SHARED/models/all-MiniLM-L6-v2}
OUT=${OUT:-$SHARED/runs/dp}
mkdir -p "$SHARED/logs"

sbatch --job-name=sieve-train-dp --nodes="$NODES" --ntasks-per-node="$GPUS" --gpus-per-task=1 \
  --cpus-per-task=8 --requeue --output="$SHARED/logs/train-dp-%j.out" <<SBATCH
#!/usr/bin/env bash
export MASTER_ADDR=\$(scontrol show hostnames "\$SLURM_JOB_NODELIST" | head -n 1)
export MASTER_PORT=\$((29500 + SLURM_JOB_ID % 1000))
# --gpus-per-task gives each task one visible GPU: it is cuda:0 in every task.
# --kill-on-bad-exit: one rank failing ends the others, which would wait in NCCL.
srun --kill-on-bad-exit=1 sieve train --distributed --device cuda:0 --model $MODEL --data $DATA \\
  --output $OUT --batch-size 1024 --mini-batch-size 128 --resume
SBATCH
