# Quick start:  make run    (environment, install, a real generation run)
#               make test   (environment with the dev extra, the whole test suite)
# TORCH picks the torch requirement, e.g. `make test TORCH=torch==2.13.0` for a CPU build.

PYTHON ?= python3
TORCH ?= torch
VENV ?= .venv
BIN := $(VENV)/bin
MODEL ?= models/random-moe
PROMPT ?= Once upon a time in the village

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

$(MODEL)/config.json: | $(VENV)/.installed
	$(BIN)/swarm random-model $(MODEL)

run: $(VENV)/.installed $(MODEL)/config.json
	$(BIN)/swarm generate --model $(MODEL) --max-tokens 32 "$(PROMPT)"

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) models .pytest_cache
