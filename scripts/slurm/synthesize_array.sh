#!/bin/bash
# One shard of stage 02 per Slurm array task, one GPU each (submit with submit_synthesis.sh,
# which sets the array range from the profile's synthesize.num_shards and queues the merge).
# Needs in the environment (sbatch passes yours on): PROFILE, RUN_DIR, NUM_SHARDS; the
# project's Python environment active (conda activate ipt) or IPT_PYTHON set.
# Every task must see RUN_DIR and the hub cache the model was pre-downloaded into.
#SBATCH --job-name=ipt-synth
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --mem=64G
#SBATCH --time=12:00:00
#SBATCH --output=%x-%A_%a.out
set -euo pipefail
: "${PROFILE:?set PROFILE (profile name or YAML path)}" "${RUN_DIR:?set RUN_DIR (shared run directory)}"
: "${NUM_SHARDS:?set NUM_SHARDS}" "${SLURM_ARRAY_TASK_ID:?submit as an array job}"
cd "${IPT_REPO:-${SLURM_SUBMIT_DIR:-.}}"
# a shard job is a plain process (not a notebook kernel): vLLM keeps its multiprocess engine
exec "${IPT_PYTHON:-python}" -m ipt_utils synthesize --profile "$PROFILE" --out "$RUN_DIR" \
    --num-shards "$NUM_SHARDS" --shard-index "$SLURM_ARRAY_TASK_ID"
