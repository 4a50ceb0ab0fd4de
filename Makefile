# Two commands on a fresh machine: `make up` runs chamberlain, `make test` runs every check.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
STATE ?= .chamberlain
PYTEST_ARGS ?=

.PHONY: up test lint typecheck unit bench install tools clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The local runtime on the example intent repository (seeded as a git repo in $(STATE)).
up: $(STAMP)
	$(BIN)/python -m chamberlain.commands.seed_example --into $(STATE)/intent-repo
	$(BIN)/chamberlain up --state-dir $(STATE) --repo $(STATE)/intent-repo \
	  --unseal-identity examples/keys/example-age-identity.txt

# System tools the tests use as real peers: the age CLI (unseal shares must open with it).
tools:
	@command -v age >/dev/null 2>&1 || { \
	  echo "installing the age CLI (Debian package age)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq age >/dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

test: tools lint typecheck
	$(BIN)/pytest $(PYTEST_ARGS)

unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) $(STATE) .pytest_cache .mypy_cache .ruff_cache
