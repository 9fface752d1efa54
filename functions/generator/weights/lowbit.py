"""The low-bit weights as the CPU serves them: the layers that compute with them, and the
file `make model` writes them to (`lowbit.safetensors`, beside the model's own weights).

Decoding one token reads every weight once, so on a CPU it is bound by how many
weight bytes are read per token. The default model ships as GGUF with its linear
layers in Q4_1: blocks of 32 weights along the input dimension, each block stored
as 4-bit codes with a float16 step and minimum (w = step * code + minimum). Serving
those layers as 4-bit with the same blocks (`Int4Linear`) reads a quarter of the
bfloat16 bytes and reproduces the published weights exactly (up to bfloat16
rounding of each block's step and minimum), rather than approximating them again.

The output head is tied to the token embeddings, which the GGUF holds in Q8_0; 4-bit
blocks cannot hold it (it fails the quality gate, `generator.prepare.quality`), so it is
served as int8 with one scale per output row (`Int8Linear`), which passes.

Both use torch's own CPU kernels (`aten::_weight_int4pack_mm_for_cpu`,
`aten::_weight_int8pack_mm`) with bfloat16 activations: no extra dependency.
Quantizing (`generator.prepare.quantize`) runs once, when `make model` prepares the
weights (it costs seconds); loading only unpacks the stored codes (milliseconds).

`lowbit.safetensors` holds the whole model as it is served on CPU: every linear layer
already quantized and every other tensor (embeddings, norms) in bfloat16. Start-up
builds the model's skeleton without initialising it and fills it from this one file
(`read_lowbit_model`), so full-precision weights are never read, converted or held:
start-up stays short and the process small. The full-precision files stay for other
precisions and devices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn

from generator.weights.checkpoint import causal_lm_class, skeleton
from streamkit.errors import ModelUnavailable

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


def unpack_codes(codes: torch.Tensor) -> torch.Tensor:
    """Stored 4-bit codes (uint8 [out, in/2], two a byte, the low nibble first, as
    `generator.prepare.quantize.quantize_int4` packs them) → one code a byte [out, in]."""
    return torch.stack([codes & 0x0F, codes >> 4], dim=-1).reshape(codes.shape[0], -1)


def dequantize_int4(
    codes: torch.Tensor, steps: torch.Tensor, minimums: torch.Tensor
) -> torch.Tensor:
    """The weights the stored blocks hold, float32 [out, in]: step * code + minimum."""
    rows = codes.shape[0]
    blocks = unpack_codes(codes).reshape(rows, -1, GROUP_SIZE).float()
    weight = blocks * steps.float().unsqueeze(-1) + minimums.float().unsqueeze(-1)
    return weight.reshape(rows, -1)


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
        unpacked = unpack_codes(codes).to(torch.int32)
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
        y: torch.Tensor = torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.reshape(-1, self.in_features), self.packed, GROUP_SIZE, self.scales_and_zeros
        )
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias


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
        y: torch.Tensor = torch.ops.aten._weight_int8pack_mm(
            x.reshape(-1, self.in_features), self.codes, self.scales
        )
        return y.reshape(*x.shape[:-1], self.out_features)


LOWBIT_FILE = "lowbit.safetensors"


def has_lowbit_weights(model_dir: Path) -> bool:
    return (model_dir / LOWBIT_FILE).is_file()


def serves_lowbit(weights: str, dtype: str, device: str, model_dir: Path | None) -> bool:
    """Whether to serve the low-bit weights: `WEIGHTS=lowbit` insists on them, `auto`
    takes them where they are the fast path (CPU, `DTYPE=auto` resolving to bfloat16)."""
    available = (
        device == "cpu"
        and model_dir is not None
        and has_lowbit_weights(model_dir)
        and cpu_kernels_available()
    )
    if weights == "lowbit":
        if not available:
            raise ModelUnavailable(
                "WEIGHTS=lowbit needs DEVICE=cpu, torch's low-bit CPU kernels, and a model "
                f"directory with {LOWBIT_FILE} (written by `make model`)"
            )
        return True
    return weights == "auto" and available and dtype == "auto" and cpu_has_bfloat16()


def linear_layers(model: Any) -> dict[str, nn.Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def head_name(model: Any) -> str:
    head = model.get_output_embeddings()
    name: str = next(name for name, m in model.named_modules() if m is head)
    return name


def read_lowbit_model(model_dir: Path) -> Any:
    """The model at `model_dir` with its linear layers served from `LOWBIT_FILE`."""
    model_class = causal_lm_class(model_dir)
    if model_class is None:
        raise ValueError(f"{model_dir}: not a single-architecture causal LM directory")
    model = skeleton(model_class, model_dir, ACTIVATION_DTYPE)
    with safe_open(str(model_dir / LOWBIT_FILE), framework="pt") as stored:
        tensors = {key: stored.get_tensor(key) for key in stored.keys()}  # noqa: SIM118
        head = (stored.metadata() or {}).get("head", "lm_head")
    replaced = _swap_linear_layers(model, tensors, head)
    rest = {key: t for key, t in tensors.items() if key.rsplit(".", 1)[0] not in replaced}
    result = model.load_state_dict(rest, strict=False, assign=True)
    missing = [key for key in result.missing_keys if key.rsplit(".", 1)[0] not in replaced]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{model_dir / LOWBIT_FILE} does not fit the model: missing {missing[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}; run `make model` again"
        )
    return model.eval()


def _swap_linear_layers(model: Any, tensors: dict[str, torch.Tensor], head: str) -> set[str]:
    replaced = set()
    for name in linear_layers(model):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if name == head:
            layer: nn.Module = Int8Linear(tensors[f"{name}.codes"], tensors[f"{name}.scales"])
        else:
            layer = Int4Linear(
                tensors[f"{name}.codes"],
                tensors[f"{name}.steps"],
                tensors[f"{name}.minimums"],
                tensors.get(f"{name}.bias"),
            )
        setattr(parent, child, layer)
        replaced.add(name)
    return replaced
