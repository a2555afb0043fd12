# Two entry points: `make demo` runs the service end to end, `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint chaos bench-tests constraints

# Created once, when missing (torch is pinned in pyproject.toml, the rest in constraints.txt).
$(BIN)/tumorseg:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -c constraints.txt -e '.[dev]'

demo: $(BIN)/tumorseg
	$(BIN)/tumorseg demo

test: $(BIN)/tumorseg
	$(BIN)/pytest

# Only the fault tests (kill workers, restart Redis, cut the database, kill the API).
chaos: $(BIN)/tumorseg
	$(BIN)/pytest -m chaos tests/chaos

# The benchmarks at size, which the default run leaves out (it keeps a smoke test of each).
bench-tests: $(BIN)/tumorseg
	$(BIN)/pytest -m bench tests/bench

# ruff (rules and format) on everything, mypy --strict on the product packages (pyproject.toml)
lint: $(BIN)/tumorseg
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# After changing dependencies in pyproject.toml: upgrade the venv, then pin what passes.
constraints: $(BIN)/tumorseg
	$(BIN)/pip install --upgrade -e '.[dev]'
	$(BIN)/pytest
	head -4 constraints.txt > constraints.txt.new
	$(BIN)/pip freeze --exclude-editable | grep -v '^torch==' >> constraints.txt.new
	mv constraints.txt.new constraints.txt
