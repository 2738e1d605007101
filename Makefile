# Flotilla: `make run` starts dev mode, `make test` runs the whole suite, `make lint` checks,
# `make toolchains` installs every guest language's toolchain (`make test` needs them all).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEPS := pyproject.toml setup.py flotilla/sandbox/_fastcall.c
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: all install run test unit lint clean toolchains

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

# The stamp first: it installs componentize-py (the build extra) before toolchains looks.
test: $(TEST_STAMP) toolchains
	$(BIN)/python -m pytest -q -ra

unit: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -ra tests/unit

lint: $(TEST_STAMP)
	$(BIN)/ruff check flotilla worker dispatcher loadtest tests
	$(BIN)/mypy flotilla worker dispatcher
	$(BIN)/lint-imports

# Guest toolchains, idempotent and silent when present: Debian packages (Rust, C), then
# each language's own script into the project-local .toolchains/ (js.sh: the npm packages
# for JavaScript and TypeScript; c.sh: the WASI adapter), then componentize-py into $(VENV)
# (Python). `make run` needs none of them.
TOOLCHAIN_SCRIPTS := js c
toolchains: | $(BIN)/python
	@tools/toolchains/debian.sh
	@for lang in $(TOOLCHAIN_SCRIPTS); do script=tools/toolchains/$$lang.sh; \
	  if [ -f $$script ]; then sh $$script || exit 1; \
	  else echo "toolchains: no $$script: $$lang guests are not set up" >&2; fi; done
	@[ -x $(BIN)/componentize-py ] || $(BIN)/pip install -q -e '.[build]'

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
