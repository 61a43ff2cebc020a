PYTHON ?= python

.PHONY: install train test test-fast lint bench

install:  ## install the package with test tools (editable)
	$(PYTHON) -m pip install -e ".[dev]"

train:  ## the main job: MemVir on the embedded glyph dataset, CPU, a few minutes
	$(PYTHON) -m memvir_pl.train

test:  ## the whole suite, slow tests included
	$(PYTHON) -m pytest -q

test-fast:
	$(PYTHON) -m pytest -q -m "not slow"

lint:
	$(PYTHON) -m ruff check src tests benchmarks

bench:
	$(PYTHON) benchmarks/bench_memvir_step.py
	$(PYTHON) benchmarks/bench_metrics.py
