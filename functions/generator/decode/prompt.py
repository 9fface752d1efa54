"""A request's prompt on its way into the model: its token ids, then its KV cache.

Both run per request: `encode_prompt` on a worker thread when the request is accepted
(so a prompt that does not fit is refused before the stream starts), `prefill` on the
scheduler thread when the row joins the batch.
"""

from __future__ import annotations

from typing import Any

import torch

from generator.weights.loaded import LoadedModel
from streamkit.errors import InvalidRequest


def encode_prompt(lm: LoadedModel, prompt: str, chat: bool, max_new_tokens: int) -> list[int]:
    """Prompt → token ids, applying the chat template when asked; checks the context fits."""
    tokenizer = lm.tokenizer
    if chat:
        if not tokenizer.chat_template:
            raise InvalidRequest("chat", "this model has no chat template; send chat=false")
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(prompt)["input_ids"]
    if len(ids) + max_new_tokens > lm.context_length:
        raise InvalidRequest(
            "max_new_tokens",
            f"prompt ({len(ids)} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the "
            f"model's context of {lm.context_length} tokens",
        )
    return [int(i) for i in ids]


def prefill(lm: LoadedModel, prompt_ids: list[int]) -> tuple[torch.Tensor, Any]:
    """Run the whole prompt through the model (batch 1): (last position's logits
    [1, vocab], the KV cache holding the prompt)."""
    input_ids = torch.tensor([prompt_ids], device=lm.device)
    output = lm.model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
    return output.logits[:, -1, :], output.cache
