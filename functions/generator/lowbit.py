"""Weight-only low-bit linear layers for decoding on CPU.

Decoding one token reads every weight once, so on a CPU it is bound by how many
weight bytes are read per token. The default model ships as GGUF with its linear
layers in Q4_1: blocks of 32 weights along the input dimension, each block stored
as 4-bit codes with a float16 step and minimum (w = step * code + minimum). Serving
those layers as 4-bit with the same blocks (`Int4Linear`) reads a quarter of the
bfloat16 bytes and reproduces the published weights exactly (up to bfloat16
rounding of each block's step and minimum), rather than approximating them again.

The output head is tied to the token embeddings, which the GGUF holds in Q8_0; 4-bit
blocks cannot hold it (it fails the quality gate, `generator.quality`), so it is
served as int8 with one scale per output row (`Int8Linear`), which passes.

Both use torch's own CPU kernels (`aten::_weight_int4pack_mm_for_cpu`,
`aten::_weight_int8pack_mm`) with bfloat16 activations: no extra dependency.
`quantize_int4` runs once, when `make model` prepares the weights (it costs seconds);
loading only unpacks the stored codes (milliseconds).
"""

from __future__ import annotations

import torch
from torch import nn

GROUP_SIZE = 32
# The kernels take activations, scales and zero points in one floating dtype.
ACTIVATION_DTYPE = torch.bfloat16


def cpu_has_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 natively (oneDNN's AVX-512/AMX kernels);
    elsewhere bfloat16 is emulated, slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def cpu_kernels_available() -> bool:
    ops = torch.ops.aten
    return hasattr(ops, "_weight_int4pack_mm_for_cpu") and hasattr(ops, "_weight_int8pack_mm")


def quantize_int4(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """Asymmetric 4-bit codes per block of `GROUP_SIZE` input weights: for each block,
    `minimum` is its smallest weight and `step` spans it to its largest in 15 steps.
    For weights dequantized from Q4_1 this recovers the original codes exactly.

    Returns `codes` (uint8 [out, in/2], two codes a byte, low nibble first) and
    `steps`, `minimums` (float32 [out, in/GROUP_SIZE])."""
    out_features, in_features = weight.shape
    if in_features % GROUP_SIZE:
        raise ValueError(f"input size {in_features} is not a multiple of {GROUP_SIZE}")
    blocks = weight.detach().float().reshape(out_features, -1, GROUP_SIZE)
    minimums = blocks.amin(dim=-1)
    steps = ((blocks.amax(dim=-1) - minimums) / 15).clamp(min=torch.finfo(torch.float32).tiny)
    codes = torch.round((blocks - minimums[..., None]) / steps[..., None]).clamp(0, 15)
    codes = codes.to(torch.uint8).reshape(out_features, -1, 2)
    packed = codes[..., 0] | (codes[..., 1] << 4)
    return {"codes": packed.contiguous(), "steps": steps, "minimums": minimums}


class Int4Linear(nn.Module):
    """y = x @ dequantize(codes).T (+ bias), computed by torch's 4-bit CPU kernel."""

    def __init__(
        self,
        codes: torch.Tensor,
        steps: torch.Tensor,
        minimums: torch.Tensor,
        bias: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.out_features = int(codes.shape[0])
        self.in_features = int(codes.shape[1]) * 2
        # The kernel's packed layout depends on the CPU's vector width, so it is built
        # here, on the serving machine, not stored.
        unpacked = torch.empty(self.out_features, self.in_features, dtype=torch.int32)
        unpacked[:, 0::2] = codes & 0x0F
        unpacked[:, 1::2] = codes >> 4
        self.packed: torch.Tensor
        self.register_buffer(
            "packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(unpacked, 1)
        )
        # The kernel computes (code - 8) * scale + zero, so zero = minimum + 8 * step.
        scales_and_zeros = torch.stack([steps, minimums + 8 * steps], dim=-1)
        self.scales_and_zeros: torch.Tensor
        self.register_buffer(
            "scales_and_zeros",
            scales_and_zeros.transpose(0, 1).contiguous().to(ACTIVATION_DTYPE),
        )
        self.bias = nn.Parameter(bias.to(ACTIVATION_DTYPE), False) if bias is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.reshape(-1, self.in_features), self.packed, GROUP_SIZE, self.scales_and_zeros
        )
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


def quantize_int8(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """Symmetric int8 codes with one scale per output row: `codes` (int8 [out, in]) and
    `scales` (float32 [out])."""
    weight = weight.detach().float()
    scales = (weight.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
    codes = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return {"codes": codes.contiguous(), "scales": scales}


class Int8Linear(nn.Module):
    """y = x @ (codes * scale).T, computed by torch's int8 weight-only CPU kernel."""

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor) -> None:
        super().__init__()
        self.out_features, self.in_features = (int(n) for n in codes.shape)
        self.codes: torch.Tensor
        # A fresh copy: the kernel's vector loads need torch's 64-byte alignment, which
        # tensors read from a safetensors file do not always have.
        self.register_buffer("codes", codes.clone(memory_format=torch.contiguous_format))
        self.scales: torch.Tensor
        self.register_buffer("scales", scales.to(ACTIVATION_DTYPE))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.aten._weight_int8pack_mm(
            x.reshape(-1, self.in_features), self.codes, self.scales
        )
        return y.reshape(*x.shape[:-1], self.out_features)
