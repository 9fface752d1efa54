"""The quality gate on the real default model: a cheaper precision must still say what
float32 says (perplexity and top-1 agreement on fixed texts, `generator.prepare.quality`).

bfloat16 must pass it; naive dynamic int8 must fail it, which shows the gate can tell a
broken quantization from a sound one. No timings are asserted here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from generator.decode.llama import LlamaDecoder
from generator.prepare.quality import GATE, Scores, compare, int8_dynamic, load_for_gate, score

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def reference(default_model_dir: Path) -> tuple[Any, Any, Scores]:
    decoder, tokenizer = load_for_gate(str(default_model_dir), "float32")
    return decoder, tokenizer, score(decoder, tokenizer)


def test_float32_reference_is_a_working_model(reference) -> None:
    _, _, scores = reference
    # A random or mis-loaded model scores in the thousands on these texts.
    assert scores.tokens > 300
    assert 2 < scores.perplexity < 40, scores.perplexity


def test_bfloat16_passes_the_gate(default_model_dir: Path, reference) -> None:
    _, tokenizer, ref_scores = reference
    decoder, _ = load_for_gate(str(default_model_dir), "bfloat16")
    assert isinstance(decoder, LlamaDecoder), "the default model is served natively"
    assert decoder.weights.dtype == torch.bfloat16
    result = compare(ref_scores, score(decoder, tokenizer))
    assert result.perplexity_ratio <= GATE.max_perplexity_ratio, result
    assert result.top1_agreement >= GATE.min_top1_agreement, result
    assert result.passes()


def test_naive_dynamic_int8_fails_the_gate(default_model_dir: Path, reference) -> None:
    _, tokenizer, ref_scores = reference
    result = compare(ref_scores, score(int8_dynamic(str(default_model_dir)), tokenizer))
    assert not result.passes(), result
    assert result.top1_agreement < GATE.min_top1_agreement, result


@pytest.mark.parametrize("decoder_setting", ["native", "transformers"])
def test_default_lowbit_weights_pass_the_gate(
    default_model_dir: Path, reference, decoder_setting: str
) -> None:
    from generator.weights.lowbit import Int4Linear, cpu_kernels_available

    if not cpu_kernels_available():
        pytest.skip("this torch build has no low-bit CPU kernels")
    _, tokenizer, ref_scores = reference
    decoder, _ = load_for_gate(str(default_model_dir), "lowbit", decoder=decoder_setting)
    if isinstance(decoder, LlamaDecoder):
        assert isinstance(decoder.weights.layers[0].qkv, Int4Linear)
    else:
        layer = decoder.model.get_submodule("model.layers.0.self_attn.q_proj")  # type: ignore[attr-defined]
        assert isinstance(layer, Int4Linear)
    result = compare(ref_scores, score(decoder, tokenizer))
    assert result.passes(), result
