# Quick start:  make run    (environment, install, the village scenario on the bundled swarm-tiny)
#               make test   (environment with the dev extra, Mosquitto where it can, the whole test suite)
# TORCH picks the torch requirement, e.g. `make test TORCH=torch==2.13.0` for a CPU build.

PYTHON ?= python3
TORCH ?= torch
VENV ?= .venv
BIN := $(VENV)/bin
SCENARIO ?= village
# village starts at 14:00, 10 minutes a tick: 36 ticks run past its 18:30 gathering
TICKS ?= 36
MODEL ?= swarm-tiny
# the broker the MQTT tests start (each its own, on a free loopback port)
MOSQUITTO ?= mosquitto

.PHONY: run test lint install install-dev mosquitto clean

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

test: $(VENV)/.installed-dev mosquitto
	$(BIN)/python -m pytest -q

# The MQTT tests need the mosquitto broker and skip without it. Install it where that needs nobody's
# password (as root, or with sudo that asks for none) through apt-get; otherwise say what to install
# and go on. (.ci/run installs it the same way.)
mosquitto:
	@if command -v $(MOSQUITTO) >/dev/null 2>&1 || [ -x /usr/sbin/$(MOSQUITTO) ]; then exit 0; fi; \
	if [ "$$(id -u)" -eq 0 ]; then SUDO=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	else SUDO=no; fi; \
	if [ "$$SUDO" != no ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "make test: installing mosquitto (apt-get): the MQTT tests run against a real broker"; \
	  $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null && exit 0; \
	  echo "make test: could not install mosquitto; the MQTT tests will be skipped"; \
	else \
	  echo "make test: the MQTT tests need the mosquitto broker (its mosquitto and mosquitto_passwd); without"; \
	  echo "  it they are skipped. Install it, then run make test again:"; \
	  echo "    sudo apt-get install mosquitto     (Debian, Ubuntu)"; \
	  echo "    brew install mosquitto             (macOS)"; \
	fi

clean:
	rm -rf $(VENV) .pytest_cache
