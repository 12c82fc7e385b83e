# The README's two commands: `make run` (install + serve) and `make test` (install + tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
REDIS_PORT ?= 6379

.PHONY: run test install install-dev check bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'

## Install and run the gateway: bundled default policy, SQLite store in ./modgate-data,
## upstream from MODGATE_UPSTREAM (or pass ARGS="--upstream URL").
run: install
	$(BIN)/modgate serve $(ARGS)

## Install and run the whole test suite (starts a local Redis if none answers).
test: install-dev
	@redis-cli -p $(REDIS_PORT) ping >/dev/null 2>&1 || \
		redis-server --daemonize yes --bind 127.0.0.1 --port $(REDIS_PORT) --save "" --appendonly no
	@for i in 1 2 3 4 5 6 7 8 9 10; do redis-cli -p $(REDIS_PORT) ping >/dev/null 2>&1 && break; sleep 0.5; done
	$(BIN)/python -m pytest --cov --cov-report=term:skip-covered --cov-fail-under=90

## Format, lint and type checks.
check: install-dev
	$(BIN)/ruff format --check gateway classifiers tests benchmarks
	$(BIN)/ruff check gateway classifiers tests benchmarks
	$(BIN)/mypy

bench: install-dev
	$(BIN)/python -m benchmarks.run

clean:
	rm -rf $(VENV) modgate-data .pytest_cache .mypy_cache .ruff_cache
