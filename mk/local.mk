# The whole service on this machine, and the browser the page's tests drive.

CHROMIUM ?= /usr/bin/chromium

.PHONY: local-up browser-deps screenshot vendor-frontend

local-up: install model ## Run generator (:8001), gateway (:8000) and the page (:8080); prints the URL
	$(PY) scripts/local_up.py

browser-deps: ## Install Debian's Chromium for the browser tests (Playwright drives it)
	@[ "$(CHROMIUM)" != /usr/bin/chromium ] || scripts/system_packages.sh "the browser tests" chromium
	@test -x $(CHROMIUM) || { echo "no Chromium at CHROMIUM=$(CHROMIUM)"; exit 1; }

TEST_PREREQS += browser-deps

screenshot: install model browser-deps ## Refresh docs/screenshot.png from the real model on the page
	UPDATE_SCREENSHOT=1 $(PY) -m pytest tests/browser/test_real_model.py -q

vendor-frontend: ## Refresh the page's vendored libraries (marked, DOMPurify) from npm into frontend/vendor
	scripts/vendor_frontend.sh
