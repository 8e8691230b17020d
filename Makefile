# Two commands set everything up on a fresh machine: `make run` and `make test`.
PROFILE ?= ci-tiny
VENV    ?= .venv
PY      := $(VENV)/bin/python
ARGS    ?=

.PHONY: env run effect effect-test rehearse rehearse-all test test-fast validate lab sync-notebooks check-notebooks fixtures clean-run

env:
	@bash scripts/setup_env.sh

# A GPU profile (run.device: cuda) never builds the CPU .venv: it runs with the python of the
# active environment (the conda env of environment.yml), and says how to make one if it is missing.
GPU_PROFILE := $(shell grep -qs '^  device: cuda' params/$(PROFILE).yaml && echo 1)

run: $(if $(GPU_PROFILE),,env)  ## the whole pipeline on $(PROFILE) (default: the tiny CPU profile, offline)
ifeq ($(GPU_PROFILE),1)
	@python -c "import ipt_utils, vllm" 2>/dev/null || { echo "$(PROFILE) is a GPU profile: set up the GPU environment first" \
	  "(conda env create -f environment.yml && conda activate ipt), or rehearse it on CPU: make rehearse PROFILE=$(PROFILE)"; exit 2; }
	python -m ipt_utils run --profile $(PROFILE) $(ARGS)
else
	$(PY) -m ipt_utils run --profile $(PROFILE) $(ARGS)
endif

effect: env  ## the paper's effect on 2 CPU cores: the cpu-effect profile, then its effect table (docs/EFFECT.md)
	$(PY) -m ipt_utils run --profile cpu-effect $(ARGS)
	@cat results/runs/cpu-effect/06_report/effect_table.md

effect-test: env  ## the full cpu-effect profile against the issue's bar (about 45 min on 2 cores; outside CI's time)
	IPT_EFFECT_FULL=1 $(PY) -m pytest -q tests/test_effect_profile.py -k full $(ARGS)

rehearse: env  ## a GPU profile on this CPU at tiny scale (make rehearse PROFILE=paper-500m)
	$(PY) -m ipt_utils run --profile $(PROFILE) --rehearse $(ARGS)

rehearse-all: env  ## every GPU profile's rehearsal, as tests (CI runs two of them)
	IPT_REHEARSE_ALL=1 $(PY) -m pytest -q tests/test_rehearse.py $(ARGS)

test: env  ## the test suite (includes a papermill run of every notebook)
	$(PY) -m pytest -q $(ARGS)

test-fast: env
	$(PY) -m pytest -q -m "not slow" $(ARGS)

validate: env
	$(PY) -m ipt_utils validate

lab: env  ## JupyterLab on localhost with the notebooks folder open, the project kernel ("Python (ipt)") by default
	$(PY) -m jupyter lab --ip=127.0.0.1 --notebook-dir=notebooks --MappingKernelManager.default_kernel_name=ipt \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(ARGS)

sync-notebooks: env  ## regenerate notebooks/*.ipynb from their py:percent twins
	$(PY) -m ipt_utils.notebooks sync

check-notebooks: env
	$(PY) -m ipt_utils.notebooks check

fixtures: env  ## regenerate the shipped fixtures (ipt_utils/fixtures/) with dev/fixture_gen.py
	$(PY) dev/fixture_gen.py $(ARGS)

clean-run:
	rm -rf results/runs/$(PROFILE)
