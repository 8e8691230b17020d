#!/bin/bash
# Stage 02 on a Slurm cluster: one array task per shard (one GPU each), then the merge job.
#
#   bash scripts/slurm/submit_synthesis.sh PROFILE RUN_DIR [extra sbatch options for the array]
#   ARRAY=3,17-20 bash scripts/slurm/submit_synthesis.sh ...   # only these shards (resubmit the missing)
#
# Run it from the repository root on a login node, with the project environment active
# (conda activate ipt). It reads num_shards from the profile (python -m ipt_utils plan),
# downloads the synthesizer ONCE into the hub cache every task will read (skip with
# DOWNLOAD=0, e.g. when it is there already or the login node has no network), then submits
#   sbatch --array=0-(N-1) synthesize_array.sh      and
#   sbatch --dependency=afterok:<array job> synth_merge.sh
# Afterwards `python -m ipt_utils run --profile PROFILE --out RUN_DIR` finds stage 02's shards
# merged (or merges them itself) and goes on with stage 03.
#
# The hub cache: HF_HUB_CACHE if you set it (recommended: a shared file system, e.g.
# export HF_HUB_CACHE=/cluster/fs/hf/hub), else HF_HOME/hub, else RUN_DIR's work dir. Jobs read it
# offline-safe; your hub login (HF_TOKEN or `hf auth login`) is used as it is, never copied.
# Datasets streamed by `shard_by: files` are cached under HF_DATASETS_CACHE: point it at
# node-local disk (e.g. export HF_DATASETS_CACHE=/tmp/$USER/hf-datasets) to spare the shared one.
set -euo pipefail
PROFILE=${1:?usage: submit_synthesis.sh PROFILE RUN_DIR [sbatch options]}
RUN_DIR=${2:?usage: submit_synthesis.sh PROFILE RUN_DIR [sbatch options]}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
PY=${IPT_PYTHON:-python}
plan() { "$PY" -m ipt_utils plan --profile "$PROFILE" --out "$RUN_DIR" --print "$1"; }
NUM_SHARDS=$(plan num_shards)
ARRAY=${ARRAY:-0-$((NUM_SHARDS - 1))}
model=$(plan synth_model)
if [ -n "$model" ] && [ "${DOWNLOAD:-1}" != 0 ]; then
  cache=$(plan hub_cache)
  echo "pre-downloading $model into $cache (once, before the array starts)"
  if command -v hf >/dev/null; then HF_HUB_CACHE=$cache hf download "$model" >/dev/null
  else HF_HUB_CACHE=$cache huggingface-cli download "$model" >/dev/null; fi
fi
echo "profile $PROFILE: $NUM_SHARDS shards, ~$(plan gpu_hours_per_shard) A100 GPU-hours each (plan estimate); array $ARRAY"
export PROFILE RUN_DIR NUM_SHARDS IPT_REPO=${IPT_REPO:-$PWD}
# a tensor-parallel synthesizer (synthesize.tensor_parallel_size) needs that many GPUs per task
array=$(sbatch --parsable --export=ALL --array="$ARRAY" --gres=gpu:"$(plan synth_gpus)" "$@" \
  "$here/synthesize_array.sh")
array=${array%%;*}
merge=$(sbatch --parsable --export=ALL --dependency=afterok:"$array" "$here/synth_merge.sh")
echo "submitted array job $array (shards $ARRAY) and merge job ${merge%%;*} (after the array succeeds)"
