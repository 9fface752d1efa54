"""The sampler's warpers compute exactly what transformers' logits processors compute
(`generator.decode.sampling`): the same floats, bit for bit, for any logits, history and
setting, so temperature, top-k, top-p and the repetition penalty mean what they mean in
transformers' `generate()`, without serving importing transformers."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from generator.decode.sampling import Sampler, repetition_penalty, temperature, top_k, top_p
from streamkit.generation import GenerationParams

VOCAB = 64


@st.composite
def logits(draw: st.DrawFn) -> torch.Tensor:
    seed = draw(st.integers(0, 2**31))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0, 100.0]))
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(1, VOCAB, generator=generator) * scale
    if draw(st.booleans()):  # ties, as a low-precision head gives
        scores = scores.round()
    return scores


histories = st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=40).map(
    lambda ids: torch.tensor([ids], dtype=torch.long)
)


@settings(max_examples=200, deadline=None)
@given(
    scores=logits(),
    history=histories,
    penalty=st.floats(0.05, 5.0),
    heat=st.floats(0.05, 3.0),
    k=st.integers(1, VOCAB + 5),
    p=st.floats(0.01, 0.99),
)
def test_each_warper_is_transformers_processor(scores, history, penalty, heat, k, p) -> None:
    ids = history
    cases = [
        (repetition_penalty(scores, ids, penalty), RepetitionPenaltyLogitsProcessor(penalty)),
        (temperature(scores, heat), TemperatureLogitsWarper(heat)),
        (top_k(scores, k), TopKLogitsWarper(k)),
        (top_p(scores, p), TopPLogitsWarper(p)),
    ]
    for ours, processor in cases:
        theirs = processor(ids, scores.clone())
        assert torch.equal(ours, theirs), type(processor).__name__


@settings(max_examples=60, deadline=None)
@given(
    scores=logits(),
    prompt=st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=20),
    penalty=st.floats(0.5, 2.0),
    heat=st.floats(0.1, 2.0),
    k=st.integers(0, VOCAB),
    p=st.floats(0.05, 1.0),
    seed=st.integers(0, 2**32),
)
def test_a_seeded_draw_is_the_draw_after_transformers_processors(
    scores, prompt, penalty, heat, k, p, seed
) -> None:
    request = GenerationParams(
        prompt="x", temperature=heat, top_k=k, top_p=p, repetition_penalty=penalty, seed=seed
    )
    processors = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(penalty)])
    processors.append(TemperatureLogitsWarper(heat))
    if k > 0:
        processors.append(TopKLogitsWarper(k))
    if p < 1.0:
        processors.append(TopPLogitsWarper(p))
    expected = processors(torch.tensor([prompt]), scores.clone())
    probabilities = torch.softmax(torch.nan_to_num(expected, nan=-torch.inf), dim=-1)
    drawn = torch.multinomial(probabilities, 1, generator=torch.Generator().manual_seed(seed))
    assert Sampler(request, "cpu", prompt)(scores) == int(drawn)
