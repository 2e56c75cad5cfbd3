# make demo: set up .venv and run the quickstart headless.  make test: set up and run the tests.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
APP := $(VENV)/.installed-app
DEV := $(VENV)/.installed-dev
DEMO_HOME ?= $(CURDIR)/.wbhome

.PHONY: venv demo test test-all gpu-check gpu-campaign bench figures clean

venv: $(DEV)

# Reinstall only when pyproject.toml changes; the stamps make repeated runs instant. The demo needs the
# package alone; tests and benches add the dev extras (Ray, psycopg, submitit, pytest, ruff, ...).
$(APP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(APP)

$(DEV): $(APP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(DEV)

demo: $(APP)
	WORKBENCH_HOME=$(DEMO_HOME) $(BIN)/workbench submit examples/quickstart.yaml --wait

# Lint and format are checked first: a style slip fails in a second, not after the suite.
test: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

# Everything, the slow stress checks included.
test-all: venv
	$(BIN)/python -m pytest -q -m ''

# On a CUDA machine: the images smoke spec on the GPU through the real worker, killed and resumed.
gpu-check: venv
	$(BIN)/python bench/gpu_check.py

# Every README figure with its spec chain; `python bench/figures.py NAME` rebuilds one.
figures: venv
	$(BIN)/python bench/figures.py

# On one CUDA GPU: every GPU figure (images, samplers, feature sweep, augmentation, attribution, training
# throughput) in about 12 minutes; `python bench/gpu_campaign.py --tiny` runs the chain on the CPU.
gpu-campaign: venv
	$(BIN)/python bench/gpu_campaign.py

bench: venv
	$(BIN)/python bench/overhead.py
	$(BIN)/python bench/queue_stress.py

clean:
	rm -rf $(VENV) $(DEMO_HOME) .pytest_cache
