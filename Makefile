# genkiln: `make run` (train, serve, generate on the bundled data) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned; set TORCH_INDEX (e.g. https://download.pytorch.org/whl/cpu) to pick a
# CPU-only or a specific CUDA build instead of PyPI's default for your platform.
TORCH_VERSION := 2.13.0
TORCH_INDEX ?=
# dev: tests and linters; infra: the CDK app; sagemaker: the SDK for container/sagemaker modes;
# clients: the endpoint clients the tests run against the server (huggingface_hub, OpenAI, ...).
EXTRAS ?= dev,infra,sagemaker,clients
CDK := node_modules/.bin/cdk
CDK_ENV := PATH="$(CURDIR)/$(BIN):$$PATH" JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20

.PHONY: setup run test lint bench image synth deploy destroy clean

setup: $(VENV)/.installed

# What training and serving need (torch and the project's own dependencies): all
# `make run` waits for. The extras (the SageMaker SDK is the large one) come with setup.
$(VENV)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed: $(VENV)/.runtime
	$(BIN)/pip install --quiet -e '.[$(EXTRAS)]'
	touch $@

## Train the bundled Transformer for a minute, serve it, print generations.
run: $(VENV)/.runtime
	$(BIN)/genkiln demo --seconds 60

## The gate: lint, type checks, then every test (unit, contract, e2e, infra).
## (With npm present, the pinned CDK CLI is installed first so the infra tests can run.)
test: setup lint $(if $(shell command -v npm),$(CDK))
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

## Side-by-side speed against the tools users would pick instead (not part of the tests).
## BENCH_FLAGS=--quick for a short run; results are saved under bench/results/.
BENCH_FLAGS ?=
bench: setup
	$(BIN)/pip install --quiet -e '.[bench]'
	$(BIN)/python -m bench.transformer $(BENCH_FLAGS)
	$(BIN)/python -m bench.serving $(BENCH_FLAGS)
	$(BIN)/python -m bench.diffusion $(BENCH_FLAGS)

## The project image, built without pulling any image (debootstrap base, local CPU torch
## wheel, this host's CA certificates); starts dockerd when it is not running. With
## registry access, `docker build -t genkiln:latest .` builds the same image.
image:
	bash .ci/image.sh

$(CDK): package-lock.json
	npm ci --no-audit --no-fund
	touch $@

## Synthesize the CDK app into cdk.out (no AWS credentials needed).
synth: setup $(CDK)
	$(CDK_ENV) $(CDK) synth --quiet

## Deploy every stack the context asks for; outputs go to cdk-outputs.json.
deploy: setup $(CDK)
	$(CDK_ENV) $(CDK) deploy --all --outputs-file cdk-outputs.json

destroy: setup $(CDK)
	$(CDK_ENV) $(CDK) destroy --all

clean:
	rm -rf $(VENV) artifacts .pytest_cache .mypy_cache .ruff_cache cdk.out node_modules
