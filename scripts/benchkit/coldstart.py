"""Cold start: a new process until the first token reaches the client, on warm disk.

Five paths, each timed from just before the process is spawned:
- `import torch`: a Python process that imports torch and nothing else: the floor any
  torch server pays, against which the others are read as ratios;
- `engine`: a bare Python process that loads the model as the generator does and
  decodes one token (the floor for anything built on it);
- `generator`: the generator's uvicorn process, a client retrying `POST /v1/generate`
  from the moment of the spawn (it accepts requests while the model loads);
- `gateway+generator`: both processes spawned at once, the client on the gateway's SSE;
- `llama.cpp`: a bare process loading the GGUF with `llama-cpp-python` (when installed).
Peak RSS is each process's VmHWM right after its first token.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from benchkit.servers import ServerProcess, peak_rss_mb, python_path
from benchkit.stats import Spread
from benchkit.streams import direct_run, gateway_run
from benchkit.variants import variant_settings
from benchkit.workload import Workload

DEADLINE_S = 180.0

_ENGINE_CHILD = """
import sys
from devtools.reference import decode_alone
from generator.decode.prompt import encode_prompt
from generator.decode.sampling import Sampler
from generator.settings import Settings
from generator.weights.loaded import load
from streamkit.generation import GenerationParams
lm = load(Settings())
request = GenerationParams(prompt=sys.argv[1], max_new_tokens=1, temperature=0)
ids = encode_prompt(lm, request, 1)
next(iter(decode_alone(lm, ids, 1, Sampler(request, lm.device, ids))))
print("first-token", flush=True)
"""

_TORCH_CHILD = """
import torch
print("first-token", flush=True)
"""

_LLAMA_CHILD = """
import os, sys
from llama_cpp import Llama
llm = Llama(model_path=sys.argv[2], n_ctx=512, n_threads=os.cpu_count(), verbose=False)
next(iter(llm.generate(llm.tokenize(sys.argv[1].encode()), top_k=1, temp=0.0)))
print("first-token", flush=True)
"""


def _child_first_token(code: str, args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Spawn `python -c code`, time it to its first-token line, then read its peak RSS."""
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**env, "PYTHONPATH": python_path()},
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        seconds = time.perf_counter() - started
        if line.strip() != "first-token":
            raise RuntimeError(f"cold-start child failed (exit {child.wait()})")
        return seconds, peak_rss_mb(child.pid)
    finally:
        child.kill()
        child.wait()


def _retry_until_token(first_token: Callable[[], object], started: float) -> float:
    while True:
        try:
            first_token()
            return time.perf_counter() - started
        except Exception:
            if time.perf_counter() - started > DEADLINE_S:
                raise
            time.sleep(0.01)


def _generator_first_token(work: Workload, env: dict[str, str]) -> tuple[float, float]:
    server = ServerProcess("generator.app:create_app", env)
    started = time.perf_counter()
    server.launch()
    try:
        seconds = _retry_until_token(lambda: direct_run(server.url, work.body(1)), started)
        return seconds, peak_rss_mb(server.pid)
    finally:
        server.stop()


def _stack_first_token(work: Workload, env: dict[str, str]) -> tuple[float, float]:
    generator = ServerProcess("generator.app:create_app", env)
    gateway = ServerProcess(
        "gateway.app:create_app", {**env, "GENERATOR_URL": generator.url}, ready_path="/healthz"
    )
    started = time.perf_counter()
    generator.launch()
    gateway.launch()
    try:
        seconds = _retry_until_token(lambda: gateway_run(gateway.url, work.body(1)), started)
        return seconds, peak_rss_mb(generator.pid)
    finally:
        gateway.stop()
        generator.stop()


def _engine(work: Workload, env: dict[str, str]) -> Callable[[], tuple[float, float]]:
    return lambda: _child_first_token(_ENGINE_CHILD, [work.prompt], env)


def measure_cold_start(
    work: Workload, env: dict[str, str], dtypes: list[str], llama_gguf: str | None
) -> dict[str, Any]:
    """`{path: {"first_token_s": Spread, "peak_rss_mb": Spread}}` over `work.runs` spawns:
    the bare engine for each of `dtypes`, the servers in their default configuration."""
    import os

    child_env = {**os.environ, **env}
    paths: dict[str, Callable[[], tuple[float, float]]] = {
        "import torch": lambda: _child_first_token(_TORCH_CHILD, [], child_env)
    }
    for dtype in dtypes:
        overrides = {key.upper(): value for key, value in variant_settings(dtype).items()}
        paths[f"engine {dtype}"] = _engine(work, {**child_env, **overrides})
    paths["generator"] = lambda: _generator_first_token(work, env)
    paths["gateway+generator"] = lambda: _stack_first_token(work, env)
    if llama_gguf is not None:
        gguf = llama_gguf
        paths["llama.cpp"] = lambda: _child_first_token(
            _LLAMA_CHILD, [work.prompt, gguf], child_env
        )
    results: dict[str, Any] = {}
    for name, measure in paths.items():
        measure()  # warm the page cache: the figures are for a warm disk
        runs = [measure() for _ in range(work.runs)]
        results[name] = {
            "first_token_s": Spread.of([s for s, _ in runs]).as_dict(),
            "peak_rss_mb": Spread.of([m for _, m in runs]).as_dict(),
        }
    return results
