# Two commands for a fresh clone: `make demo` runs the PennFudan example's offline demo,
# `make test` runs the test suite and builds the docs. Each creates .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.detkit-installed

.PHONY: install test lint docs demo benchmarks clean

install: $(STAMP)

# Reinstall when the project's metadata changes; torch and torchvision are pinned to the
# releases this project is tested with (pip takes them from the local wheel cache when present).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install --quiet -e ".[dev,fast]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples docs
	$(PY) -m pytest
	$(MAKE) docs

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples docs
	$(PY) -m ruff format --check src tests benchmarks examples docs

docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

# About five minutes on a 2-core CPU: synthetic pedestrians, a light Mask R-CNN trained from
# scratch; writes runs/demo/ (checkpoints, metrics.json, predictions.png).
demo: $(STAMP)
	$(PY) examples/pennfudan/train.py --demo

benchmarks: $(STAMP)
	for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) docs/_build .pytest_cache .hypothesis runs
