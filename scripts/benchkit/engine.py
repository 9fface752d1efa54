"""The engine alone: the generator's own decode loop in this process, no HTTP.

Loads the model exactly as the generator does (`generator.model.load_model`) for one
precision (a dtype, or `lowbit`) and times `decode()`: TTFT is prefill plus the first
sampled token, decode tok/s is the rate of the tokens after it. EOS is switched off so
each run decodes exactly `max_new_tokens` tokens.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

from benchkit.stats import Spread, rate
from benchkit.workload import Workload


def measure_engine(dtype: str, work: Workload) -> dict[str, Any]:
    from generator.model import decode, encode_prompt, load_model
    from generator.protocol import GenerateRequest
    from generator.sampling import Sampler
    from generator.settings import Settings, precision_settings

    lm = load_model(Settings(**precision_settings(dtype)))  # type: ignore[arg-type]
    lm = dataclasses.replace(lm, eos_ids=frozenset())
    request = GenerateRequest(**work.body())
    prompt_ids = encode_prompt(lm, work.prompt, False, work.max_new_tokens)

    def run() -> tuple[float, float, list[int]]:
        sampler = Sampler(request, lm.device, prompt_ids)
        started, times, tokens = time.perf_counter(), [], []
        for token in decode(lm, prompt_ids, work.max_new_tokens, sampler, threading.Event()):
            times.append(time.perf_counter())
            tokens.append(token)
        return rate(times), (times[0] - started) * 1e3, tokens

    _, _, tokens = run()  # warm-up: first-call allocations and kernel selection
    results = [run() for _ in range(work.runs)]
    text = lm.tokenizer.decode(tokens)
    return {
        "dtype": dtype,
        "prompt_tokens": len(prompt_ids),
        "new_tokens": len(tokens),
        "tok_s": Spread.of([r for r, _, _ in results]).as_dict(),
        "ttft_ms": Spread.of([t for _, t, _ in results]).as_dict(),
        "text": text,
    }
