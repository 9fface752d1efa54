"""Choosing the next token from logits: greedy, or seeded sampling with the usual warpers.

Reuses transformers' logits processors so temperature/top-k/top-p/repetition
penalty mean exactly what they mean in `generate()`; the frequency and presence
penalties are OpenAI's (`OccurrencePenalty`). Each request owns a
`torch.Generator`, so other requests never consume its random numbers, and its own
token history (prompt and sampled so far) for the repetition penalty: a seed
reproduces the same text whatever else runs. (Exactly so in float32; in bfloat16 or
low-bit weights the logits' last bits depend on the padding of the batch a request
shares — see `generator.decode.batch` — so a near-tie can go the other way.)
"""

from __future__ import annotations

import secrets
from typing import cast

import torch
from transformers import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from streamkit.generation import GenerationParams


class OccurrencePenalty:
    """OpenAI's frequency and presence penalties: a token's logit is lowered by `frequency`
    for each time it was generated so far, and by `presence` once it was generated at all.
    Only generated tokens count, not the prompt (as in OpenAI's API and vLLM)."""

    def __init__(self, frequency: float, presence: float) -> None:
        self.frequency = frequency
        self.presence = presence
        self._counts: torch.Tensor | None = None  # [vocab], made at the first call

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        if self._counts is None:
            self._counts = torch.zeros(scores.shape[-1], dtype=scores.dtype, device=scores.device)
        counts = self._counts
        return scores - counts * self.frequency - (counts > 0).to(scores.dtype) * self.presence

    def count(self, token: int) -> None:
        if self._counts is not None:
            self._counts[token] += 1


class Sampler:
    def __init__(self, request: GenerationParams, device: str, prompt_ids: list[int]) -> None:
        self.greedy = request.greedy
        self._occurrences: OccurrencePenalty | None = None
        if request.frequency_penalty or request.presence_penalty:
            self._occurrences = OccurrencePenalty(
                request.frequency_penalty, request.presence_penalty
            )
        self._processors = LogitsProcessorList()
        # Only the repetition penalty reads the tokens so far; without it none are kept.
        self._history: torch.Tensor | None = None
        if request.repetition_penalty != 1.0:
            self._history = torch.tensor([prompt_ids], dtype=torch.long, device=device)
            self._processors.append(RepetitionPenaltyLogitsProcessor(request.repetition_penalty))
        if not self.greedy:
            self._processors.append(TemperatureLogitsWarper(request.temperature))
            if request.top_k > 0:
                self._processors.append(TopKLogitsWarper(request.top_k))
            if request.top_p < 1.0:
                self._processors.append(TopPLogitsWarper(request.top_p))
        self._generator = torch.Generator(device=device)
        seed = request.seed if request.seed is not None else secrets.randbits(63)
        self._generator.manual_seed(seed)

    def __call__(self, logits: torch.Tensor) -> int:
        """Pick the next token id from the last position's logits (shape [1, vocab]);
        it joins the history the next pick is penalised with."""
        scores = logits.float()
        if self._occurrences is not None:
            scores = self._occurrences(scores)
        if self._processors:
            history = self._history
            ids = history if history is not None else torch.empty((1, 0), dtype=torch.long)
            scores = self._processors(cast(torch.LongTensor, ids), scores)
        if self.greedy:
            token = int(scores.argmax(dim=-1).item())
        else:
            probs = torch.softmax(scores, dim=-1)
            token = int(torch.multinomial(probs, 1, generator=self._generator).item())
        if self._history is not None:
            picked = torch.tensor([[token]], dtype=torch.long, device=self._history.device)
            self._history = torch.cat([self._history, picked], dim=1)
        if self._occurrences is not None:
            self._occurrences.count(token)
        return token
