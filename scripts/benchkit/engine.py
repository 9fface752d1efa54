"""The engine alone: one generation decoded in this process, no HTTP, no scheduler thread.

Loads the model exactly as the generator does (`generator.weights.loaded.load`) for one
variant (a dtype, or `lowbit`, optionally through transformers: `benchkit.variants`) and
times `devtools.reference.decode_alone`: the server's own prefill and batch step, for a
batch of one row. TTFT is prefill plus the
first sampled token, decode tok/s is the rate of the tokens after it. EOS is switched
off so each run decodes exactly `max_new_tokens` tokens.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from benchkit.stats import Spread, rate
from benchkit.variants import variant_settings
from benchkit.workload import Workload


def measure_engine(dtype: str, work: Workload) -> dict[str, Any]:
    from devtools.reference import decode_alone
    from generator.decode.prompt import encode_prompt
    from generator.decode.sampling import Sampler
    from generator.settings import Settings
    from generator.weights.loaded import load
    from streamkit.generation import GenerationParams

    lm = load(Settings(**variant_settings(dtype)))  # type: ignore[arg-type]
    lm = dataclasses.replace(lm, eos_ids=frozenset())
    request = GenerationParams(**work.body())
    prompt_ids = encode_prompt(lm, request, work.max_new_tokens)

    def run() -> tuple[float, float, list[int]]:
        sampler = Sampler(request, lm.device, prompt_ids)
        started, times, tokens = time.perf_counter(), [], []
        for token in decode_alone(lm, prompt_ids, work.max_new_tokens, sampler):
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
