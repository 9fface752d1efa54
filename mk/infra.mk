# AWS deployment (infra/: AWS SAM) and its offline checks (cfn-lint, checkov).
# The deploy targets need the AWS CLI, the SAM CLI, Docker and credentials; each
# prints what it runs and stops with a clear message when one is missing.

STACK_NAME ?= textgen
# Template parameters, e.g. PARAMS="StreamingMode=buffered GeneratorMemorySize=4096".
PARAMS ?=
# The validators live in their own venv: checkov pins dozens of packages that would
# fight the project's pins.
INFRA_VENV ?= .venv-infra
INFRA_REQUIREMENTS := infra/requirements-lint.txt
INFRA_LOCK := infra/requirements-lint.lock

.PHONY: deploy deploy-stack deploy-frontend destroy infra-deps infra-lint

deploy: deploy-stack deploy-frontend ## AWS: build both images, deploy the stack (guided the first time), upload the page

deploy-stack: ## AWS: only sam build + sam deploy (PARAMS="Key=Value ...", STACK_NAME)
	@STACK_NAME=$(STACK_NAME) PARAMS="$(PARAMS)" infra/deploy.sh stack

deploy-frontend: ## AWS: upload the page with the deployed gateway URL in config.js, invalidate CloudFront
	@STACK_NAME=$(STACK_NAME) infra/deploy.sh frontend

destroy: ## AWS: empty the page bucket and delete the stack (asks first; YES=1 skips)
	@STACK_NAME=$(STACK_NAME) infra/deploy.sh destroy

$(INFRA_VENV)/.installed: $(INFRA_REQUIREMENTS) $(INFRA_LOCK)
	@echo ">> creating $(INFRA_VENV) (cfn-lint, checkov)"
	@test -x $(INFRA_VENV)/bin/python || $(PYTHON) -m venv $(INFRA_VENV)
	@$(INFRA_VENV)/bin/python -m pip install --disable-pip-version-check -q \
		--constraint $(INFRA_LOCK) -r $(INFRA_REQUIREMENTS)
	@touch $@

infra-deps: $(INFRA_VENV)/.installed ## cfn-lint and checkov, pinned, in their own venv (.venv-infra)
	@:

infra-lint: infra-deps ## cfn-lint and checkov on the template and both Dockerfiles
	$(INFRA_VENV)/bin/cfn-lint -c I --non-zero-exit-code informational -- infra/template.yaml
	BC_SKIP_MAPPING=TRUE $(INFRA_VENV)/bin/checkov --quiet --compact --skip-download \
		-f infra/template.yaml -f Dockerfile.generator -f Dockerfile.gateway

TEST_PREREQS += infra-deps
