# Flotilla: `make run` starts dev mode, `make test` runs the whole suite, `make lint` checks.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEPS := pyproject.toml setup.py flotilla/sandbox/_fastcall.c
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: all install run test unit lint clean

all: lint test

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# `make run` needs the dev extras (fakeredis, moto) and componentize-py for the examples.
$(RUN_STAMP): $(DEPS) | $(BIN)/python
	$(BIN)/pip install -q -e '.[build,dev]'
	touch $@

# `make test` and `make lint` need everything (the test extra is a superset).
$(TEST_STAMP): $(DEPS) | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(RUN_STAMP)

install: $(TEST_STAMP)

run: $(RUN_STAMP)
	$(BIN)/flotilla dev

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -ra

unit: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -ra tests/unit

lint: $(TEST_STAMP)
	$(BIN)/ruff check flotilla worker dispatcher loadtest tests
	$(BIN)/mypy flotilla worker dispatcher
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
