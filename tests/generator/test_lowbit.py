"""The low-bit layers (`generator.weights.lowbit`) compute what the weights quantized for them
(`generator.prepare.quantize`) say."""

from __future__ import annotations

import pytest
import torch

from generator.prepare.quantize import quantize_int4, quantize_int8
from generator.weights.lowbit import GROUP_SIZE, Int4Linear, Int8Linear, cpu_kernels_available

pytestmark = pytest.mark.skipif(not cpu_kernels_available(), reason="no low-bit CPU kernels")


def q4_1_like(out_features: int, in_features: int) -> torch.Tensor:
    """Weights as a Q4_1 file holds them: per block of 32, step * code + minimum."""
    generator = torch.Generator().manual_seed(0)
    blocks = in_features // GROUP_SIZE
    codes = torch.randint(0, 16, (out_features, blocks, GROUP_SIZE), generator=generator)
    codes[..., 0], codes[..., 1] = 0, 15  # every block spans its full range, as Q4_1's do
    steps = torch.rand(out_features, blocks, 1, generator=generator) * 0.01 + 1e-3
    minimums = -torch.rand(out_features, blocks, 1, generator=generator) * 0.05
    return (codes * steps + minimums).reshape(out_features, in_features)


def dequantize_int4(q: dict[str, torch.Tensor]) -> torch.Tensor:
    codes = torch.stack([q["codes"] & 0x0F, q["codes"] >> 4], dim=-1).float()
    codes = codes.reshape(q["codes"].shape[0], -1, GROUP_SIZE)
    return (codes * q["steps"][..., None] + q["minimums"][..., None]).flatten(1)


def test_int4_recovers_q4_1_weights_exactly() -> None:
    weight = q4_1_like(96, 128)
    assert torch.allclose(dequantize_int4(quantize_int4(weight)), weight, rtol=0, atol=1e-6)


def test_int4_codes_are_packed_two_a_byte() -> None:
    q = quantize_int4(q4_1_like(8, 64))
    assert q["codes"].dtype == torch.uint8
    assert q["codes"].shape == (8, 32)
    assert q["steps"].shape == q["minimums"].shape == (8, 2)


def test_int4_rejects_a_width_that_is_not_whole_blocks() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize_int4(torch.zeros(4, 40))


@pytest.mark.parametrize("rows", [1, 3, 8, 17])
def test_int4_linear_matches_its_weights(rows: int) -> None:
    weight = q4_1_like(192, 256)
    layer = Int4Linear(**quantize_int4(weight))
    x = torch.randn(rows, 256, generator=torch.Generator().manual_seed(1))
    expected = x @ weight.T
    got = layer(x.to(torch.bfloat16)).float()
    assert got.shape == (rows, 192)
    # bfloat16 activations, scales and outputs: about 3 significant digits.
    assert torch.allclose(got, expected, rtol=0.02, atol=0.02 * expected.abs().max().item())


def test_int4_linear_keeps_leading_dimensions_and_adds_its_bias() -> None:
    weight = q4_1_like(64, 64)
    bias = torch.arange(64, dtype=torch.float32)
    layer = Int4Linear(**quantize_int4(weight), bias=bias)
    x = torch.randn(2, 3, 64).to(torch.bfloat16)
    without = Int4Linear(**quantize_int4(weight))(x)
    assert layer(x).shape == (2, 3, 64)
    assert torch.allclose(layer(x).float(), (without + bias.to(torch.bfloat16)).float())


@pytest.mark.parametrize("rows", [1, 4, 5])
def test_int8_linear_matches_its_weights(rows: int) -> None:
    weight = torch.randn(300, 128, generator=torch.Generator().manual_seed(2))
    layer = Int8Linear(**quantize_int8(weight))
    x = torch.randn(rows, 128, generator=torch.Generator().manual_seed(3))
    expected = x @ weight.T
    got = layer(x.to(torch.bfloat16)).float()
    assert torch.allclose(got, expected, rtol=0.03, atol=0.03 * expected.abs().max().item())


def test_int8_linear_accepts_codes_that_are_not_aligned() -> None:
    # Tensors read from a file may start anywhere; the kernel needs aligned codes.
    q = quantize_int8(torch.randn(64, 64))
    storage = torch.zeros(64 * 64 + 5, dtype=torch.int8)
    storage[5:] = q["codes"].flatten()
    shifted = storage[5:].view(64, 64)
    layer = Int8Linear(shifted, q["scales"])
    x = torch.randn(4, 64).to(torch.bfloat16)
    assert torch.equal(layer(x), Int8Linear(**q)(x))
