# Quick start:  make run    (environment, install, the village scenario on the bundled swarm-tiny)
#               make test   (environment with the dev extra, the whole test suite)
# TORCH picks the torch requirement, e.g. `make test TORCH=torch==2.13.0` for a CPU build.

PYTHON ?= python3
TORCH ?= torch
VENV ?= .venv
BIN := $(VENV)/bin
SCENARIO ?= village
# village starts at 14:00, 10 minutes a tick: 36 ticks run past its 18:30 gathering
TICKS ?= 36
MODEL ?= swarm-tiny

.PHONY: run test lint install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: $(VENV)/.installed
	$(BIN)/swarm run $(SCENARIO) --model $(MODEL) --ticks $(TICKS)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
