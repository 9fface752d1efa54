"""What the scheduler needs from a model: prefill one prompt, and decode rows together.

Two implementations: `generator.decode.llama.LlamaDecoder`, the native decoder for the
Llama family (the default model's), and `generator.decode.batch.TransformersDecoder`,
any Hugging Face causal LM through transformers' modeling code (GPT-2 and every other
architecture). `generator.weights.loaded.load` picks one.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class Batch(Protocol):
    """Rows decoding together, addressed by index in the order they were added."""

    shared: bool  # whether other rows can join (False: a cache that cannot be merged)

    @property
    def size(self) -> int: ...

    def add(self, cache: Any, length: int) -> None:
        """Append a prefilled row: `prefill`'s cache of `length` prompt tokens."""

    def step(self, tokens: list[int]) -> torch.Tensor:
        """Feed each row's newest token; the next token's logits for every row [rows, vocab]."""
        ...

    def keep(self, rows: list[int]) -> None:
        """Keep only `rows` (indices, in their new order)."""


class Decoder(Protocol):
    def prefill(self, prompt_ids: list[int]) -> tuple[torch.Tensor, Any]:
        """The prompt alone: (its last position's logits [1, vocab], its KV cache)."""
        ...

    def logits(self, ids: list[int]) -> torch.Tensor:
        """Every position's next-token logits [tokens, vocab] (teacher forcing)."""
        ...

    def open_batch(self, cache: Any, length: int) -> Batch:
        """A new batch, for a row whose prefilled `cache` no existing shared batch takes."""
        ...

    def mergeable(self, cache: Any, length: int) -> bool:
        """Whether this row can join a shared batch."""
        ...
