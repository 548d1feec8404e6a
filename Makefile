# genkiln: `make run` (train, serve, generate on the bundled data) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned; set TORCH_INDEX (e.g. https://download.pytorch.org/whl/cpu) to pick a
# CPU-only or a specific CUDA build instead of PyPI's default for your platform.
TORCH_VERSION := 2.13.0
TORCH_INDEX ?=
EXTRAS ?= dev

.PHONY: setup run test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

## Train the bundled Transformer for a minute, serve it, print generations.
run: setup
	$(BIN)/genkiln demo --seconds 60

## The gate: lint, type checks, then every test (unit, contract, e2e, infra).
test: setup lint
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

## Side-by-side speed against the tools users would pick instead (not part of the tests).
bench: setup
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python bench/transformer.py

clean:
	rm -rf $(VENV) artifacts .pytest_cache .mypy_cache .ruff_cache
