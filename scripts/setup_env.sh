#!/usr/bin/env bash
# Create .venv with the pinned CPU stack (see ../shared/design/ENVIRONMENT.md):
# torch's CPU wheel first, then everything else constrained to it, then the CUDA-only
# extras that PyPI drags in are removed (they fail to import beside CPU torch).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
stamp="$VENV/.installed"
want=$(cat pyproject.toml constraints-cpu.txt scripts/setup_env.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip="$VENV/bin/python -m pip --disable-pip-version-check -q"
$pip install --upgrade pip
$pip install torch==2.13.0
$pip install -c constraints-cpu.txt -e ".[cpu,dev]"
$pip uninstall -y torchvision torchaudio torchcodec triton >/dev/null 2>&1 || true
# the notebooks' kernel ("Python (ipt)"), inside the venv: JupyterLab and papermill pick this interpreter
"$VENV/bin/python" -m ipykernel install --sys-prefix --name ipt --display-name "Python (ipt)" >/dev/null
"$VENV/bin/python" -c "import torch, transformers, vllm, lm_eval, papermill; print('env ok: torch', torch.__version__, 'transformers', transformers.__version__)"
echo "$want" > "$stamp"
