# Flotilla: `make run` starts dev mode, `make test` runs the whole suite.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: all install run test unit lint bench clean

all: lint test

$(STAMP): pyproject.toml setup.py flotilla/sandbox/_fastcall.c
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/flotilla dev

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra

unit: $(STAMP)
	$(BIN)/python -m pytest -q -ra tests/unit

lint: $(STAMP)
	$(BIN)/ruff check flotilla worker dispatcher loadtest tests
	$(BIN)/mypy flotilla worker dispatcher

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
