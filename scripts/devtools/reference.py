"""One generation decoded alone, step by step, with the server's own pieces.

The server never decodes a request by itself: every running generation is a row of the
scheduler's batch (`generator.decode.scheduler`). This is that path for a batch of one
row, without the scheduler's thread, queue or streaming around it: the prompt through
the decoder's `prefill`, then its batch's `step` for each further token, sampled by the request's
own `Sampler`. Tests compare what the server streams with it (a batched row must decode
to what it decodes alone), and the benchmark's "engine alone" row times it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from generator.decode.sampling import Sampler
from generator.weights.loaded import LoadedModel


@torch.inference_mode()
def decode_alone(
    lm: LoadedModel,
    prompt_ids: list[int],
    max_new_tokens: int,
    sampler: Sampler,
    on_forward: Callable[[], None] = lambda: None,
) -> Iterator[int]:
    """Yield the generated token ids one at a time, ending after EOS or `max_new_tokens`;
    `on_forward` is called before each forward pass (the prefill included)."""
    on_forward()
    logits, cache = lm.decoder.prefill(prompt_ids)
    batch = lm.decoder.open_batch(cache, len(prompt_ids))
    batch.add(cache, len(prompt_ids))
    for step in range(max_new_tokens):
        token = sampler(logits)
        yield token
        if token in lm.eos_ids or step == max_new_tokens - 1:
            return
        on_forward()
        logits = batch.step([token])
