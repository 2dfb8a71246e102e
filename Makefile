# One entry point for humans and CI. `make test` is what .ci/run and the README call.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

VLLM_VENV ?= .venv-vllm

POLICY_VENV ?= policy/venv

.PHONY: install vllm-parser vllm-flags vllm-metrics policy-venv schemas test lint typecheck unit

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

# The CrossGuard pack's own virtualenv (pulumi-policy pins protobuf 5.29; the program runs on 6.x), where
# `pulumi preview --policy-pack policy/` runs it and tests/policy/test_pack.py starts it.
policy-venv:
	test -x $(POLICY_VENV)/bin/python || $(PYTHON) -m venv $(POLICY_VENV)
	$(POLICY_VENV)/bin/pip install --quiet -r policy/requirements.txt

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

test: install vllm-parser vllm-metrics policy-venv lint typecheck unit

# The `vllm serve` flag table the preview checks user arguments against, from vLLM's own parser
# (tests/vllm_serve/test_flags.py fails when the committed table drifts from it).
vllm-flags: vllm-parser
	VLLM_TARGET_DEVICE=cpu $(VLLM_VENV)/bin/python infra/vllm/flag_table_dump.py > infra/vllm/serve-flags.tsv.tmp
	mv infra/vllm/serve-flags.tsv.tmp "infra/vllm/serve-flags-$$($(BIN)/python -c 'from infra.versions import VLLM_VERSION; print(VLLM_VERSION)').tsv"

# vLLM's default /metrics exposition, from its own metrics logger in .venv-vllm, into the ignored .schemas/
# (tests/vllm_facts.py; the tests also generate it on first use).
vllm-metrics: vllm-parser
	$(BIN)/python -m tests.vllm_facts
