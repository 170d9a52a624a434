# Two entry points, both safe to run on a fresh clone:
#   make worker  - virtualenv, install, create the roles and the database, migrate, start the worker
#   make test    - virtualenv, install, lint, type-check, run the whole test suite
#   make test-fast - the same without the end-to-end tier (pytest -m "not e2e")
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup worker test test-fast lint clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

setup: $(STAMP)

worker: setup
	$(BIN)/loyalty db create-roles
	$(BIN)/loyalty db upgrade
	$(BIN)/loyalty worker

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/pytest

test-fast: lint
	$(BIN)/pytest -m "not e2e"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
