# The gateway function: run it alone, and measure what it adds on top of the generator.

GATEWAY_HOST ?= 127.0.0.1
GATEWAY_PORT ?= 8000
GENERATOR_URL ?= http://$(GENERATOR_HOST):$(GENERATOR_PORT)

.PHONY: run-gateway bench-gateway

run-gateway: install ## Run only the gateway on GATEWAY_HOST:GATEWAY_PORT (talks to GENERATOR_URL)
	GENERATOR_URL=$(GENERATOR_URL) $(VENV)/bin/uvicorn --factory gateway.app:create_app \
		--host $(GATEWAY_HOST) --port $(GATEWAY_PORT) --log-level warning

bench-gateway: model ## Gateway's added latency per token and tok/s vs the generator alone (real model)
	$(PY) scripts/bench_gateway.py
