# The whole service on this machine, and the browser the page's tests drive.

CHROMIUM ?= /usr/bin/chromium

.PHONY: local-up browser-deps lint-scripts

local-up: install model ## Run generator (:8001), gateway (:8000) and the page (:8080); prints the URL
	$(PY) scripts/local_up.py

browser-deps: ## Install Debian's Chromium for the browser tests (Playwright drives it)
	@if [ ! -x $(CHROMIUM) ]; then \
		echo ">> installing chromium (apt-get)"; \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi
	@test -x $(CHROMIUM) || { echo "chromium missing at $(CHROMIUM)"; exit 1; }

# scripts/ is outside `functions tests`: lint the orchestrator here as well.
lint-scripts: install
	$(VENV)/bin/ruff check scripts/local_up.py
	$(VENV)/bin/ruff format --check scripts/local_up.py
	$(VENV)/bin/mypy --strict --ignore-missing-imports scripts/local_up.py

lint: lint-scripts
TEST_PREREQS += browser-deps
