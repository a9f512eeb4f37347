# Everything a fresh machine needs is installed from here: the virtualenv and its
# pinned Python packages, and the Go-built local stack (cached in $(MLCYCLE_CACHE)).
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
export MLCYCLE_CACHE ?= $(HOME)/.cache/mlcycle

.PHONY: all venv lock toolchain crds docs lint typecheck test test-unit test-integration demo bench clean

all: test

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: $(BIN)/uv requirements.lock pyproject.toml
	$(BIN)/uv pip sync --quiet --python $(BIN)/python requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e .
	$(BIN)/pip check
	touch $@

venv: $(VENV)/.installed

# Re-pin after changing dependencies in pyproject.toml.
# The image installs requirements.runtime.lock: the same pins, without the dev tools.
lock: $(BIN)/uv
	$(BIN)/uv pip compile --quiet pyproject.toml --extra dev --python-version 3.11 -o requirements.lock
	$(BIN)/uv pip compile --quiet pyproject.toml --extra serving --python-version 3.11 \
		-c requirements.lock -o requirements.runtime.lock

toolchain:
	dev/toolchain/build.sh

# The chart ships the same generated files; a unit test fails when either copy is stale.
crds: venv
	$(BIN)/mlcycle crds --output-dir crds
	rm -rf charts/mlcycle/crds && cp -r crds charts/mlcycle/crds

# The README's troubleshooting table, from the API's documented reasons; a unit test fails
# when it is stale.
docs: venv
	$(BIN)/mlcycle docs --readme README.md

lint: venv
	$(BIN)/ruff check operator tests benchmarks examples
	$(BIN)/ruff format --check operator tests benchmarks examples
	$(BIN)/lint-imports --config pyproject.toml
	$(BIN)/mypy

test: venv toolchain lint
	$(BIN)/pytest tests

test-unit: venv
	$(BIN)/pytest -m unit tests

test-integration: venv toolchain
	$(BIN)/pytest -m "integration or e2e" tests

demo: venv toolchain
	$(BIN)/python -m mlcycle.dev.demo

bench: venv
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .stack
