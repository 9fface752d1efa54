"""Quantizing a model's weights into the low-bit file it is served from on CPU.

Runs once, when `make model` (or the image build) prepares the default model
(`generator.prepare.convert`); the serving side only reads the result
(`generator.weights.lowbit`): 4-bit blocks for the decoder's linear layers, int8 rows
for the output head, every other tensor in bfloat16.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from generator.weights.lowbit import (
    ACTIVATION_DTYPE,
    GROUP_SIZE,
    LOWBIT_FILE,
    head_name,
    linear_layers,
)


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


def quantize_int8(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """Symmetric int8 codes with one scale per output row: `codes` (int8 [out, in]) and
    `scales` (float32 [out])."""
    weight = weight.detach().float()
    scales = (weight.abs().amax(dim=1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
    codes = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return {"codes": codes.contiguous(), "scales": scales}


def write_lowbit_weights(model: Any, model_dir: Path) -> None:
    """Quantize every linear layer of `model` (full precision) into `model_dir/LOWBIT_FILE`."""
    head = head_name(model)
    linears = linear_layers(model)
    tensors: dict[str, torch.Tensor] = {}
    for name, linear in linears.items():
        quantize = quantize_int8 if name == head else quantize_int4
        for key, value in quantize(linear.weight).items():
            tensors[f"{name}.{key}"] = value
        if linear.bias is not None:
            tensors[f"{name}.bias"] = linear.bias.detach().float().contiguous()
    for key, value in model.state_dict().items():
        if key.rsplit(".", 1)[0] not in linears:
            tensors[key] = value.detach().to(ACTIVATION_DTYPE).contiguous()
    save_file(tensors, str(model_dir / LOWBIT_FILE), metadata={"head": head})
