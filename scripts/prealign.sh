#!/usr/bin/env bash
#SBATCH --job-name=videopanda-prealign
#SBATCH --nodes=16
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:4
#SBATCH --exclusive
# Stage "prealign" of the release recipe (configs/prealign.yaml), like the seed's prealign.sh.
#
#   single node:   DATA_ROOT=/data/videopanda scripts/prealign.sh [key=value ...]
#   many nodes:    on each node: DATA_ROOT=... NNODES=16 NODE_RANK=<i> MASTER_ADDR=<node 0> scripts/prealign.sh
#   slurm:         DATA_ROOT=... sbatch scripts/prealign.sh
#
# DATA_ROOT is the seed's data layout (train/train_json/*.json, train/valley/, train/videochatgpt_tune/);
# CONFIG picks another config (e.g. configs/small/prealign.yaml). See scripts/launch.sh for NPROC etc.
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"

DATA=()  # without DATA_ROOT, the config's data paths as written
if [[ -n "${DATA_ROOT:-}" ]]; then
    DATA=(--data-root "$DATA_ROOT")  # fills the config's own DATA_ROOT/... paths
fi
exec scripts/launch.sh "${CONFIG:-configs/prealign.yaml}" \
    ${DATA[@]+"${DATA[@]}"} \
    "$@"
