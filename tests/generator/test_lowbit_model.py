"""A model served from its low-bit weight file computes what its weights say
(`generator.weights.lowbit`), and `WEIGHTS` picks that file or the full weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from generator.prepare.quantize import write_lowbit_weights
from generator.weights.llama import Dense
from generator.weights.lowbit import (
    LOWBIT_FILE,
    Int4Linear,
    Int8Linear,
    cpu_kernels_available,
    read_lowbit_model,
)
from support.models import build_tiny_llama

pytestmark = pytest.mark.skipif(not cpu_kernels_available(), reason="no low-bit CPU kernels")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from transformers import AutoModelForCausalLM

    directory = build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    write_lowbit_weights(model, directory)
    return directory, model


def test_every_linear_layer_is_served_low_bit(tiny_llama) -> None:
    directory, _ = tiny_llama
    assert (directory / LOWBIT_FILE).is_file()
    model = read_lowbit_model(directory)
    layers = dict(model.named_modules())
    assert not any(isinstance(m, torch.nn.Linear) for m in layers.values())
    assert isinstance(layers["model.layers.0.mlp.up_proj"], Int4Linear)
    assert isinstance(layers["lm_head"], Int8Linear)
    assert all(not t.is_meta for t in [*model.parameters(), *model.buffers()])


def test_low_bit_model_predicts_what_the_full_model_predicts(tiny_llama) -> None:
    directory, full = tiny_llama
    model = read_lowbit_model(directory)
    ids = torch.tensor([list(range(100, 140))])
    with torch.inference_mode():
        expected = full(input_ids=ids).logits.float()
        got = model(input_ids=ids).logits.float()
    assert got.shape == expected.shape
    # Random weights quantized to 4 bits: close, not equal (a real model's Q4_1 weights
    # are reproduced exactly; tests/perf holds the quality gate on those).
    correlation = torch.corrcoef(torch.stack([got.flatten(), expected.flatten()]))[0, 1]
    assert correlation > 0.98, correlation


def test_the_native_decoder_computes_the_low_bit_model_as_transformers_does(tiny_llama) -> None:
    from generator.settings import Settings
    from generator.weights.loaded import load

    directory, _ = tiny_llama
    ids = list(range(100, 140))
    native = load(Settings(model=str(directory), weights="lowbit", decoder="native"))
    reference = load(Settings(model=str(directory), weights="lowbit", decoder="transformers"))
    with torch.inference_mode():
        got = native.decoder.logits(ids).float()
        expected = reference.decoder.logits(ids).float()
    # The same 4-bit weights and bfloat16 activations; only the order of a few roundings
    # differs (fused projections, torch's RMSNorm).
    torch.testing.assert_close(got, expected, rtol=0.05, atol=0.05)


def test_weights_setting_chooses_what_is_served(tiny_llama, tiny_model_dir: Path) -> None:
    from generator.settings import Settings
    from generator.weights.loaded import load
    from streamkit.errors import ModelUnavailable

    directory, _ = tiny_llama
    lowbit = load(Settings(model=str(directory), weights="lowbit"))
    assert lowbit.weights == "lowbit"
    assert isinstance(lowbit.model.head, Int8Linear)
    full = load(Settings(model=str(directory), weights="full", dtype="float32"))
    assert full.weights == "float32"
    assert isinstance(full.model.head, Dense)
    assert full.model.head.weight.dtype == torch.float32
    transformers_full = load(
        Settings(model=str(directory), weights="full", dtype="float32", decoder="transformers")
    )
    assert isinstance(transformers_full.model.get_submodule("lm_head"), torch.nn.Linear)
    # An explicit precision means the full weights, in that precision.
    assert load(Settings(model=str(directory), dtype="float32")).weights == "float32"
    with pytest.raises(ModelUnavailable, match="WEIGHTS=lowbit"):
        load(Settings(model=str(tiny_model_dir), weights="lowbit"))
