# The benchmark (`make bench`): figures for docs/performance.md, never part of `make test`.

BENCH_ARGS ?=
BENCH_OUT ?= .run/bench
LLAMA_CPP_PYTHON := llama-cpp-python==0.3.36

.PHONY: bench bench-deps bench-anchor loadtest

$(VENV)/.bench-installed: $(VENV)/.installed requirements-bench.txt $(LOCK)
	$(PIP) install -q --constraint $(LOCK) -r requirements-bench.txt
	touch $@

bench-deps: $(VENV)/.bench-installed ## What `make bench` needs beyond `make install` (matplotlib)

bench: model bench-deps ## Benchmark side by side (BENCH_ARGS="--quick" / "--only engine"); writes BENCH_OUT
	$(PY) scripts/bench.py --out $(BENCH_OUT) $(BENCH_ARGS)

# The llama.cpp anchor, built for this CPU only (no GPU backends). Compiles for minutes.
bench-anchor: install ## Install llama-cpp-python into the venv so `make bench` includes the llama.cpp anchor
	@$(PY) -c "import llama_cpp" 2>/dev/null || { \
		echo ">> building $(LLAMA_CPP_PYTHON) (CPU only; a few minutes)"; \
		CMAKE_ARGS="-DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_BLAS=OFF -DGGML_NATIVE=ON" \
		CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(PIP) install -q $(LLAMA_CPP_PYTHON); }

# The load test (`make loadtest`): concurrent SSE and OpenAI clients against the gateway
# for a few minutes (docs/loadtest.md); never part of `make test`. Against the servers
# `make local-up` runs, or its own with LOADTEST_ARGS="--start". Exit status 1 on a failure.
LOADTEST_ARGS ?=

loadtest: install ## Load test the running service (make local-up) for 2 min; LOADTEST_ARGS="--start" starts its own
	$(PY) scripts/loadtest.py $(LOADTEST_ARGS)
