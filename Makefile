# Two commands on a fresh machine: `make up` runs chamberlain, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
STATE ?= .chamberlain
PYTEST_ARGS ?=

.PHONY: up test lint typecheck unit bench install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The local runtime on the example intent repository (seeded as a git repo in $(STATE)).
up: $(STAMP)
	$(BIN)/python -m chamberlain.commands.seed_example --into $(STATE)/intent-repo
	$(BIN)/chamberlain up --state-dir $(STATE) --repo $(STATE)/intent-repo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(STATE) .pytest_cache .mypy_cache .ruff_cache
