# Two commands for a fresh clone: `make demo` runs the PennFudan example's offline demo,
# `make test` runs the test suite and builds the docs. Each creates .venv when it is missing.
PYTHON ?= python3
VENV ?= .venv
# Windows (make under Git Bash / MSYS) puts the venv's interpreter in Scripts/.
PY := $(VENV)/$(if $(filter Windows_NT,$(OS)),Scripts/python.exe,bin/python)
STAMP := $(VENV)/.detkit-installed

# The torch build. By default pip's usual index gives the releases this project is tested
# with. TORCH_INDEX installs torch and torchvision from another wheel index instead, e.g. the
# CPU-only build on a machine without an NVIDIA GPU (a few hundred MB instead of ~3 GB):
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
# or one CUDA version's build (.../whl/cu128); TORCH_EXTRA_INDEX adds an index beside pip's
# usual one. To change the build of an existing .venv, run `make clean` first.
TORCH ?= torch==2.14.1 torchvision==0.29.1
TORCH_INDEX ?=
TORCH_EXTRA_INDEX ?=
TORCH_PIP_ARGS := $(strip $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) \
	$(if $(TORCH_EXTRA_INDEX),--extra-index-url $(TORCH_EXTRA_INDEX)))

# Free disk space a new .venv needs, in GB: torch's default build brings the CUDA libraries
# (5.8 GB measured for the whole .venv), the CPU-only build a few hundred MB. Checked before
# the venv is made: a full disk otherwise fails inside pip or ensurepip, minutes in, with a
# message that does not say why.
NEED_GB ?= $(if $(findstring cpu,$(TORCH_INDEX)),2,6)

.PHONY: install test lint docs demo benchmarks clean disk-check

install: $(STAMP)

disk-check:
	@$(PYTHON) -c "import shutil, sys; free = shutil.disk_usage('.').free / 1e9; \
	sys.exit(0 if free >= $(or $(NEED_GB),0) else f'only {free:.1f} GB free on this disk, but the \
	virtual environment needs about $(NEED_GB) GB (torch, torchvision and, in their default \
	build, the CUDA libraries). Free some space, or install the CPU-only build: make test \
	TORCH_INDEX=https://download.pytorch.org/whl/cpu (NEED_GB=0 skips this check)')"

# Reinstall when the project's metadata changes. torch and torchvision go first, from the
# chosen index, so that installing detkit finds its torch requirement met.
$(STAMP): pyproject.toml
	test -x $(PY) || $(MAKE) --no-print-directory disk-check
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) $(TORCH)
	$(PY) -m pip install --quiet -e ".[dev,fast]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples docs
	$(PY) -m mypy
	$(PY) -m pytest
	$(MAKE) docs

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples docs
	$(PY) -m mypy
	$(PY) -m ruff format --check src tests benchmarks examples docs

docs: $(STAMP)
	$(PY) -m sphinx -n -W --keep-going -q -b html docs docs/_build/html

# About five minutes on a 2-core CPU: synthetic pedestrians, a light Mask R-CNN trained from
# scratch; writes runs/demo/ (checkpoints, metrics.json, predictions.png).
demo: $(STAMP)
	$(PY) examples/pennfudan/train.py --demo

benchmarks: $(STAMP)
	for script in benchmarks/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) docs/_build .pytest_cache .hypothesis .mypy_cache runs build dist src/*.egg-info
