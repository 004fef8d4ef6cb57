# One entry point for people and CI. `make test` runs the whole suite (unit + integration
# against a real Kafka broker the tests start themselves); `make check` adds lint and types.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test unit integration lint typecheck check wheel-smoke demo bench clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is needed ($(PYTHON) not found)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

# The product as users install it: a built wheel in a fresh venv, driven end to end.
wheel-smoke: $(STAMP)
	PYTHON=$(BIN)/python .ci/wheel-smoke

demo: $(STAMP)
	$(BIN)/python -m consumer demo $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.targets

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
