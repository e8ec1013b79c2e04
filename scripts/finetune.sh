#!/usr/bin/env bash
#SBATCH --job-name=videopanda-finetune
#SBATCH --nodes=16
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:4
#SBATCH --exclusive
# Stage "finetune" of the release recipe (configs/finetune.yaml), like the seed's finetune.sh.
#
#   single node:   DATA_ROOT=/data/videopanda scripts/finetune.sh [key=value ...]
#   many nodes:    on each node: DATA_ROOT=... NNODES=16 NODE_RANK=<i> MASTER_ADDR=<node 0> scripts/finetune.sh
#   slurm:         DATA_ROOT=... sbatch scripts/finetune.sh
#
# DATA_ROOT is the seed's data layout (train/train_json/*.json, train/valley/, train/videochatgpt_tune/);
# CONFIG picks another config (e.g. configs/small/finetune.yaml). See scripts/launch.sh for NPROC etc.
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"

DATA=()  # without DATA_ROOT, the config's data paths as written
if [[ -n "${DATA_ROOT:-}" ]]; then
    DATA=(--data-root "$DATA_ROOT")  # fills the config's own DATA_ROOT/... paths
fi
exec scripts/launch.sh "${CONFIG:-configs/finetune.yaml}" \
    ${DATA[@]+"${DATA[@]}"} \
    "$@"
