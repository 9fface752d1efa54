"""Choosing the next token from logits: greedy, or seeded sampling with the usual warpers.

Temperature, top-k, top-p and the repetition penalty compute exactly what transformers'
logits processors compute in `generate()` (the same operations in the same order;
`tests/generator/test_sampling.py` compares them bit for bit), written out here so that
serving never imports transformers (its import alone costs a cold start ~1.4 s). The
frequency and presence penalties are OpenAI's (`OccurrencePenalty`). Each request owns
a `torch.Generator`, so other requests never consume its random numbers, and its own
token history (prompt and sampled so far) for the repetition penalty: a seed
reproduces the same text whatever else runs. (Bit for bit on the native decoder, which
is batch-invariant; through transformers' modeling code in bfloat16 or low-bit weights
the logits' last bits depend on the padding of the batch a request shares — see
`generator.decode.batch` — so a near-tie can go the other way.)
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from functools import partial

import torch

from streamkit.generation import GenerationParams

Warper = Callable[[torch.Tensor], torch.Tensor]


def repetition_penalty(scores: torch.Tensor, history: torch.Tensor, penalty: float) -> torch.Tensor:
    """Every token in `history` ([1, n]) once: a positive logit divided by `penalty`, a
    negative one multiplied (transformers' `RepetitionPenaltyLogitsProcessor`)."""
    vocab = scores.shape[-1]
    # Ids beyond the head's vocabulary (an embedding table larger than the head) land
    # on one extra column that is dropped again.
    history = history.clamp(max=vocab)
    padded = torch.nn.functional.pad(scores, (0, 1))
    score = torch.gather(padded, 1, history)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return padded.scatter(1, history, score)[..., :vocab]


def temperature(scores: torch.Tensor, value: float) -> torch.Tensor:
    return scores / value


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Only the `k` highest logits (and any tied with the k-th) stay."""
    k = min(max(k, 1), scores.shape[-1])
    kth = torch.topk(scores, k)[0][..., -1, None]
    return scores.masked_fill(scores < kth, -torch.inf)


def top_p(scores: torch.Tensor, p: float) -> torch.Tensor:
    """The smallest set of most likely tokens whose probabilities add up to more than
    `p` stays (at least the most likely one)."""
    ascending, indices = torch.sort(scores, descending=False)
    cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
    remove = cumulative <= (1 - p)
    remove[..., -1:] = False
    return scores.masked_fill(remove.scatter(1, indices, remove), -torch.inf)


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


def _overflowed(scores: torch.Tensor, processed: torch.Tensor) -> int | None:
    """The token to take when the warpers overflowed, else None. Extreme settings the API
    allows (a temperature or a repetition penalty of 1e-300) divide logits into ±inf, and
    softmax of inf is NaN. Their limit is still defined: the tokens that went to +inf
    are infinitely likelier than the rest, and among them (all divided alike) the one
    with the highest score before the warpers wins, as it would for any finite setting
    small enough. With no +inf and nothing finite left, the plain argmax."""
    if bool(torch.isfinite(processed).all()):
        return None
    infinite = torch.isposinf(processed)
    if not bool(infinite.any()):
        if bool(torch.isfinite(processed).any()):
            return None  # only -inf (masked tokens) and NaN: sampling skips them below
        infinite = torch.ones_like(infinite)
    return int(torch.where(infinite, scores, -torch.inf).argmax(dim=-1).item())


class Sampler:
    def __init__(self, request: GenerationParams, device: str, prompt_ids: list[int]) -> None:
        self.greedy = request.greedy
        self._occurrences: OccurrencePenalty | None = None
        if request.frequency_penalty or request.presence_penalty:
            self._occurrences = OccurrencePenalty(
                request.frequency_penalty, request.presence_penalty
            )
        # Only the repetition penalty reads the tokens so far; without it none are kept.
        self._history: torch.Tensor | None = None
        self._penalty = request.repetition_penalty
        if request.repetition_penalty != 1.0:
            self._history = torch.tensor([prompt_ids], dtype=torch.long, device=device)
        # In transformers' order: repetition penalty, temperature, top-k, top-p.
        self._warpers: list[Warper] = []
        if not self.greedy:
            self._warpers.append(partial(temperature, value=request.temperature))
            if request.top_k > 0:
                self._warpers.append(partial(top_k, k=request.top_k))
            if request.top_p < 1.0:
                self._warpers.append(partial(top_p, p=request.top_p))
        self._generator = torch.Generator(device=device)
        seed = request.seed if request.seed is not None else secrets.randbits(63)
        self._generator.manual_seed(seed)

    def _pick(self, scores: torch.Tensor) -> int:
        if self.greedy:
            return int(scores.argmax(dim=-1).item())
        probs = torch.softmax(torch.nan_to_num(scores, nan=-torch.inf), dim=-1)
        return int(torch.multinomial(probs, 1, generator=self._generator).item())

    def __call__(self, logits: torch.Tensor) -> int:
        """Pick the next token id from the last position's logits (shape [1, vocab]);
        it joins the history the next pick is penalised with."""
        scores = logits.float()
        if self._occurrences is not None:
            scores = self._occurrences(scores)
        processed = scores
        if self._history is not None:
            processed = repetition_penalty(processed, self._history, self._penalty)
        for warp in self._warpers:
            processed = warp(processed)
        token = _overflowed(scores, processed)
        if token is None:
            token = self._pick(processed)
        if self._history is not None:
            picked = torch.tensor([[token]], dtype=torch.long, device=self._history.device)
            self._history = torch.cat([self._history, picked], dim=1)
        if self._occurrences is not None:
            self._occurrences.count(token)
        return token
