# Each target installs what it needs first, then runs:
# - into the active virtual environment when one is active ($VIRTUAL_ENV),
# - else into the project-local .venv/ (created with $(PYTHON) -m venv when missing).
# The install (pip install -e ".[dev]") is redone only when setup.cfg, setup.py or pyproject.toml
# change: a stamp file in the environment records the last one.
PYTHON ?= python3
ENV_DIR := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV),.venv)
PY := $(ENV_DIR)/bin/python
STAMP := $(ENV_DIR)/.memvir-pl-installed

.PHONY: install train test test-fast lint bench clean-env

install: $(STAMP)  ## install the package with test tools (editable) if not done yet

$(PY):
	$(PYTHON) -m venv $(ENV_DIR) || { echo "make: could not create $(ENV_DIR) with '$(PYTHON) -m venv';" \
	  "install Python's venv module (Debian/Ubuntu: apt-get install python3-venv), or activate an" \
	  "environment of your own (Python >= 3.10) and run make again." >&2; exit 1; }

$(STAMP): setup.cfg setup.py pyproject.toml | $(PY)
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

train: $(STAMP)  ## the main job: MemVir on the embedded glyph dataset, CPU, a few minutes
	$(PY) -m memvir_pl.train

test: $(STAMP)  ## the whole suite, slow tests included (what .ci/run runs)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/bench_memvir_step.py
	$(PY) benchmarks/bench_metrics.py

clean-env:  ## remove the project-local environment (the next target recreates it)
	rm -rf .venv
