#!/bin/bash
# Merge the finished shards of stage 02 (CPU only); queued by submit_synthesis.sh with
# --dependency=afterok on the array, so it starts only when every shard task succeeded.
#SBATCH --job-name=ipt-synth-merge
#SBATCH --cpus-per-task=4
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail
: "${PROFILE:?set PROFILE}" "${RUN_DIR:?set RUN_DIR}" "${NUM_SHARDS:?set NUM_SHARDS}"
cd "${IPT_REPO:-${SLURM_SUBMIT_DIR:-.}}"
exec "${IPT_PYTHON:-python}" -m ipt_utils synth-merge --profile "$PROFILE" --out "$RUN_DIR" --num-shards "$NUM_SHARDS"
