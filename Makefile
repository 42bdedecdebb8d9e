# Two commands for a fresh machine (see README): `make demo` and `make test`.
# Everything runs from a local virtualenv created with the system's python3 and pip.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CORES ?= 2
# Rules that start tools of their own (papermill, dask workers) find them in the venv without activating it.
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: help venv lock demo test test-unit lint format bench docs clean

help:
	@echo "make demo   - install into $(VENV) and run the default workflow (synthetic CAN data + SIR calibration)"
	@echo "make test   - install into $(VENV) and run the whole test suite"
	@echo "make bench  - run every benchmark under bench/ (prints BENCH lines)"
	@echo "make lint   - ruff, snakefmt --check, snakemake --lint"
	@echo "make docs   - regenerate docs/rulegraph.*, README.md's rule graph and config/README.md from the workflow"
	@echo "make lock   - resolve the dependencies anew and write constraints.txt (what make venv installs)"

venv: $(STAMP)

# Reinstall when the dependency list, the lock or the set of packages changes (an editable install maps the
# packages it found when installed: a package added later would not import). constraints.txt holds the exact
# versions (make lock); torch is pinned in pyproject.toml (a CPU wheel where one is on disk).
$(STAMP): pyproject.toml constraints.txt $(wildcard src/*/__init__.py executors/*/__init__.py)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@# Snakemake finds executor plugins by scanning sys.path (pkgutil), which cannot see the import hook of an
	@# editable install with two package roots: put executors/ on sys.path (a plain install needs no such line).
	$(BIN)/python -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "snakemake-gpu-catalog-executors.pth").write_text(str(pathlib.Path("executors").resolve()) + "\n")'
	touch $@

demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES)

# Two workers; tests that share a resource or a trained pipeline run on one worker (see .tests/conftest.py).
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup --durations=25

test-unit: $(STAMP)
	$(BIN)/python -m pytest .tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check src executors wrappers bench scripts .tests
	$(BIN)/snakefmt --check workflow wrappers .tests
	$(BIN)/snakemake --lint

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format src executors wrappers bench scripts .tests
	$(BIN)/snakefmt workflow wrappers .tests

bench: $(STAMP)
	PYTHON=$(BIN)/python bash scripts/bench_all.sh

# A fresh resolution of pyproject.toml's ranges in a throwaway virtualenv, frozen into constraints.txt (its header
# kept). Run after changing dependencies, then `make venv` installs it and the tests check the venv against it.
LOCK_VENV := .venv-lock
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet '.[dev]'
	{ grep '^#' constraints.txt; $(LOCK_VENV)/bin/python -m pip freeze --exclude snakemake-gpu-catalog --exclude torch; } \
		> constraints.txt.new && mv constraints.txt.new constraints.txt
	rm -rf $(LOCK_VENV) build

docs: $(STAMP)
	$(BIN)/python scripts/make_docs.py

clean:
	rm -rf results resources logs benchmarks checkpoints .snakemake report.html
