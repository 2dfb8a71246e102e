# One entry point for humans and CI. `make test` is what .ci/run and the README call.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

VLLM_VENV ?= .venv-vllm

.PHONY: install vllm-parser schemas test lint typecheck unit

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt

# vLLM's own argument parser for tests/test_vllm_parser.py, in its own venv (CPU torch, vLLM --no-deps).
vllm-parser:
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet --no-deps -r requirements-vllm.txt
	$(VLLM_VENV)/bin/pip install --quiet --no-deps \
		"vllm==$$($(BIN)/python -c 'from infra.versions import VLLM_VERSION; print(VLLM_VERSION)')"

# Upstream CRDs and Helm chart values the tests validate against, pinned by commit and sha256, into .schemas/.
schemas: $(BIN)/python
	$(BIN)/python -m tests.upstream_files

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck:
	$(BIN)/pyright

unit:
	$(BIN)/python -m pytest

test: install vllm-parser lint typecheck unit
