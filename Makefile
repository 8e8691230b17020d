# Two commands set everything up on a fresh machine: `make run` and `make test`.
PROFILE ?= ci-tiny
VENV    ?= .venv
PY      := $(VENV)/bin/python
ARGS    ?=

.PHONY: env run rehearse rehearse-all test test-fast validate lab sync-notebooks check-notebooks clean-run

env:
	@bash scripts/setup_env.sh

run: env  ## the whole pipeline on $(PROFILE) (default: the tiny CPU profile, offline)
	$(PY) -m ipt_utils run --profile $(PROFILE) $(ARGS)

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

clean-run:
	rm -rf results/runs/$(PROFILE)
