# `make run` and `make test` work from a fresh clone: they create the venv and install first.
PY ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
RUN_STAMP := $(VENV)/.run-stamp

.PHONY: install install-run run test fuzz lint bench bench-check docs clean

# Everything: the gateway, the PostgreSQL drivers (the dev extra pulls in `postgres`) and the
# test and lint tools.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP) $(RUN_STAMP)

# What running the embedded SQLite gateway needs, no dev tools (a full install counts too).
$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $(RUN_STAMP)

install: $(STAMP)

install-run: $(RUN_STAMP)

run: install-run
	$(BIN)/pushgate migrate
	$(BIN)/pushgate demo
	$(BIN)/pushgate serve

test: install
	$(BIN)/python -m pytest

# The fuzz test of `make test` with many more (random) requests: minutes, not seconds.
# PUSHGATE_FUZZ_EXAMPLES=N to choose how many; PUSHGATE_TEST_PG_DSN adds PostgreSQL.
fuzz: install
	PUSHGATE_FUZZ_PROFILE=fuzz $(BIN)/python -m pytest -q tests/api/test_fuzz.py

# .ci/run runs this before `make test`, so a type error in src/ fails CI.
lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

bench: install
	$(BIN)/python bench/run.py

# Warns (never fails) when a fast subset falls well below bench/baseline.json.
bench-check: install
	$(BIN)/python bench/check.py

docs: install
	$(BIN)/pushgate docs error-codes

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .mypy_cache
