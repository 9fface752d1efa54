"""The low-bit weight file of a prepared model: written once by `make model`, read at start-up.

`lowbit.safetensors` sits beside the model's own safetensors and holds the whole
model as it is served on CPU: every linear layer already quantized
(`generator.lowbit`: 4-bit blocks for the decoder layers, int8 rows for the output
head) and every other tensor (embeddings, norms) in bfloat16. Start-up builds the
model's skeleton without initialising it and fills it from this one file, so
full-precision weights are never read, converted or held: start-up stays short and
the process small. The full-precision files stay for other precisions and devices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from generator.loading import causal_lm_class, skeleton
from generator.lowbit import (
    ACTIVATION_DTYPE,
    Int4Linear,
    Int8Linear,
    cpu_has_bfloat16,
    cpu_kernels_available,
    quantize_int4,
    quantize_int8,
)
from streamkit.errors import ModelUnavailable

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


def _linear_layers(model: Any) -> dict[str, nn.Linear]:
    return {name: m for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def _head_name(model: Any) -> str:
    head = model.get_output_embeddings()
    return next(name for name, m in model.named_modules() if m is head)


def write_lowbit_weights(model: Any, model_dir: Path) -> None:
    """Quantize every linear layer of `model` (full precision) into `model_dir/LOWBIT_FILE`."""
    head = _head_name(model)
    linears = _linear_layers(model)
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


def load_lowbit_model(model_dir: Path) -> Any:
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
    for name in _linear_layers(model):
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
