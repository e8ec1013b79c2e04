#!/usr/bin/env bash
# Launch one training stage with torchrun: one node, many nodes, or under slurm.
# Used by prealign.sh / pretrain.sh / finetune.sh; run from the repository (or any
# directory holding the config's relative paths).
#
#   scripts/launch.sh CONFIG [key=value ...]
#
# Environment (launcher settings, read by this script only):
#   NPROC        processes (GPUs) per node        default: all visible GPUs, else 1
#   NNODES       number of nodes                  default: 1 ($SLURM_NNODES under slurm)
#   NODE_RANK    this node's rank                 default: 0 ($SLURM_NODEID under slurm)
#   MASTER_ADDR  address of node 0                default: 127.0.0.1 (first slurm node under slurm)
#   MASTER_PORT  rendezvous port                  default: 29500
# Under `sbatch`, the script starts itself once per node with `srun`.
set -euo pipefail

CONFIG=${1:?usage: scripts/launch.sh CONFIG [key=value ...]}
shift

if [[ -n "${SLURM_JOB_ID:-}" && -z "${VIDEOPANDA_SRUN_STEP:-}" ]]; then
    # The batch script itself: one launcher task per node.
    export VIDEOPANDA_SRUN_STEP=1
    exec srun --ntasks-per-node=1 --kill-on-bad-exit=1 "$0" "$CONFIG" "$@"
fi

if [[ -n "${SLURM_JOB_ID:-}" ]]; then
    NNODES=${NNODES:-$SLURM_NNODES}
    NODE_RANK=${NODE_RANK:-$SLURM_NODEID}
    MASTER_ADDR=${MASTER_ADDR:-$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)}
fi

if [[ -z "${NPROC:-}" ]]; then
    NPROC=$(python -c "import torch; print(max(1, torch.cuda.device_count()))")
fi

exec torchrun \
    --nnodes "${NNODES:-1}" \
    --node_rank "${NODE_RANK:-0}" \
    --nproc_per_node "$NPROC" \
    --master_addr "${MASTER_ADDR:-127.0.0.1}" \
    --master_port "${MASTER_PORT:-29500}" \
    -m videopanda train --config "$CONFIG" "$@"
