"""The Llama family's weights as the native decoder computes with them, read without transformers.

The default model (SmolLM2) is a Llama: RMSNorm, rotary positions, grouped-query
attention, a SwiGLU MLP. So are Mistral and Qwen2 (Qwen2 adds a bias to the query, key
and value projections). `LlamaConfig.read` recognises such a directory from its
`config.json` alone; anything it does not cover exactly (other rotary scalings, sliding
windows, MLP biases, other activations) is left to the transformers path.

`read_llama` reads the weights into what the decoder (`generator.decode.llama`) needs,
and nothing else: per layer one fused query-key-value projection and one fused
gate-up projection (one matmul each instead of three and two), the norms, the token
embeddings and the output head. From `lowbit.safetensors` the projections are the
4-bit blocks and the head the int8 rows (`generator.weights.lowbit`); from
`model.safetensors` they are dense tensors in the served dtype.

Importing this module imports neither transformers nor its modeling code: a cold start
pays for torch, safetensors and the tokenizer only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from generator.weights.jsonfile import read_object
from generator.weights.lowbit import (
    ACTIVATION_DTYPE,
    LOWBIT_FILE,
    Int4Linear,
    Int8Linear,
    dequantize_int4,
)

WEIGHTS_FILE = "model.safetensors"
# Architectures whose decoder layer is exactly the one `generator.decode.llama` computes.
_FAMILY = frozenset({"llama", "mistral", "qwen2"})

Projection = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LlamaConfig:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    context_length: int
    tied_embeddings: bool

    @classmethod
    def read(cls, directory: Path) -> LlamaConfig | None:
        """The config of a directory the native decoder computes exactly; else None."""
        config = read_object(directory / "config.json")
        if config.get("model_type") not in _FAMILY:
            return None
        rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
        window = config.get("sliding_window")
        uses_window = window is not None and config.get("use_sliding_window", True)
        if (
            rope_type != "default"
            or config.get("hidden_act", "silu") != "silu"
            or config.get("mlp_bias", False)
            or uses_window
            or "quantization_config" in config
            or "auto_map" in config
        ):
            return None
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(config["intermediate_size"]),
            layers=int(config["num_hidden_layers"]),
            heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
            rope_theta=float(theta or 10000.0),
            context_length=int(config["max_position_embeddings"]),
            tied_embeddings=bool(config.get("tie_word_embeddings", False)),
        )


class Dense:
    """y = x @ weight.T (+ bias) with a dense weight in the served dtype.

    On CPU, torch's dense matrix products take a different kernel, with a different
    summation order, depending on how many rows they multiply: measured here, float32
    rows of a 1-3 or 5-7 row product differ in their last bits from the same rows in a
    64-row one, bfloat16 rows of a 1-row product sometimes do. Padding every input to a
    multiple of `ROWS` rows (zero rows, results dropped) keeps each row's result
    independent of how many rows it came with — what makes a batched generation decode
    exactly as it does alone. The 4-bit and int8 kernels need no padding: each row is
    computed the same way whatever the batch (tested)."""

    ROWS = 4

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        self.weight = weight
        self.bias = bias
        self._pad = weight.device.type == "cpu"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0]
        missing = -rows % self.ROWS
        if not self._pad or missing == 0:
            return torch.nn.functional.linear(x, self.weight, self.bias)
        padded = torch.cat([x, x.new_zeros(missing, x.shape[1])])
        return torch.nn.functional.linear(padded, self.weight, self.bias)[:rows]


@dataclass
class LlamaLayer:
    input_norm: torch.Tensor
    qkv: Projection  # [rows, hidden] → [rows, (heads + 2 * kv_heads) * head_dim]
    output: Projection
    post_norm: torch.Tensor
    gate_up: Projection  # [rows, hidden] → [rows, 2 * intermediate]
    down: Projection


@dataclass
class LlamaWeights:
    config: LlamaConfig
    embeddings: torch.Tensor  # [vocab, hidden]
    layers: list[LlamaLayer]
    norm: torch.Tensor
    head: Projection  # [rows, hidden] → [rows, vocab]
    dtype: torch.dtype  # of the activations
    device: str


def read_llama(directory: Path, config: LlamaConfig, precision: str, device: str) -> LlamaWeights:
    """The weights in `directory` as `precision` ("lowbit" or a dtype name) serves them.

    A dtype is read from the full weights when the directory has them, else expanded
    from the low-bit file: its 4-bit blocks are the GGUF's own, so expanding them gives
    the very values `make model` writes to the full file (tested), and an image can
    carry the low-bit file alone."""
    if precision == "lowbit":
        return _from_lowbit(directory / LOWBIT_FILE, config)
    return _dense(directory, config, getattr(torch, precision), device)


def has_weights(directory: Path, precision: str) -> bool:
    """Whether `read_llama` finds what `precision` is read from."""
    if precision == "lowbit":
        return (directory / LOWBIT_FILE).is_file()
    return (directory / WEIGHTS_FILE).is_file() or (directory / LOWBIT_FILE).is_file()


def _from_lowbit(path: Path, config: LlamaConfig) -> LlamaWeights:
    # Read tensor by tensor (not mapped), each freed once repacked: the stored 4-bit
    # codes never sit in memory all at once beside their repacked copy, which keeps the
    # start's peak memory at about what serving holds.
    with safe_open(str(path), framework="pt", backend="pread") as stored:
        names = set(stored.keys())
        head_name = (stored.metadata() or {}).get("head", "lm_head")

        def fused(*projections: str) -> Int4Linear:
            # 4-bit blocks run along the input dimension, so projections that share
            # their input stack along the output dimension as they are.
            def stacked(part: str) -> torch.Tensor:
                return torch.cat([_get(stored, f"{p}.{part}") for p in projections])

            with_bias = all(f"{p}.bias" in names for p in projections)
            return Int4Linear(
                stacked("codes"),
                stacked("steps"),
                stacked("minimums"),
                stacked("bias") if with_bias else None,
            )

        def norm(name: str) -> torch.Tensor:
            return _get(stored, name).to(ACTIVATION_DTYPE)

        layers = _layers(config, norm, fused)
        head = Int8Linear(_get(stored, f"{head_name}.codes"), _get(stored, f"{head_name}.scales"))
        final_norm = norm("model.norm.weight")
    return LlamaWeights(
        config=config,
        embeddings=_mapped(path, "model.embed_tokens.weight", ACTIVATION_DTYPE),
        layers=layers,
        norm=final_norm,
        head=head,
        dtype=ACTIVATION_DTYPE,
        device="cpu",
    )


def _mapped(path: Path, name: str, dtype: torch.dtype) -> torch.Tensor:
    """One tensor as a view of its own mapping of the file: a token's embedding row
    becomes resident when a prompt first uses it, the other ~49k rows never do."""
    with safe_open(str(path), framework="pt") as stored:
        return _get(stored, name).to(dtype)


def _dense(directory: Path, config: LlamaConfig, dtype: torch.dtype, device: str) -> LlamaWeights:
    """Dense weights in `dtype`: from the full file when the directory has it (mapped:
    tensors stored in `dtype` stay views of it), else expanded from the low-bit file
    (read tensor by tensor: the codes are expanded, not kept), each expanded block
    rounded to the dtype the model was prepared in, as the full file's values are."""
    full = directory / WEIGHTS_FILE
    expand = not full.is_file()
    path = directory / LOWBIT_FILE if expand else full
    with safe_open(str(path), framework="pt", backend="pread" if expand else "mmap") as stored:
        names = set(stored.keys())
        stored_embeddings = _get(stored, "model.embed_tokens.weight")
        prepared = stored_embeddings.dtype

        def tensor(name: str) -> torch.Tensor:
            return _get(stored, name).to(device=device, dtype=dtype)

        def weight(projection: str) -> torch.Tensor:
            if not expand:
                return tensor(f"{projection}.weight")
            parts = (
                _get(stored, f"{projection}.{part}") for part in ("codes", "steps", "minimums")
            )
            return dequantize_int4(*parts).to(prepared).to(device=device, dtype=dtype)

        layers = _layers(config, tensor, _dense_fusion(names, weight, tensor))
        embeddings = stored_embeddings.to(device=device, dtype=dtype)
        if "lm_head.weight" in names:
            head_weight = tensor("lm_head.weight")
        elif config.tied_embeddings:
            head_weight = embeddings
        else:  # the low-bit file's int8 rows, expanded: close to the full head, not equal
            head_name = (stored.metadata() or {}).get("head", "lm_head")
            codes = _get(stored, f"{head_name}.codes").float()
            scales = _get(stored, f"{head_name}.scales").float().unsqueeze(-1)
            head_weight = (codes * scales).to(device=device, dtype=dtype)
        return LlamaWeights(
            config=config,
            embeddings=embeddings,
            layers=layers,
            norm=tensor("model.norm.weight"),
            head=Dense(head_weight),
            dtype=dtype,
            device=device,
        )


def _dense_fusion(
    names: set[str],
    weight: Callable[[str], torch.Tensor],
    tensor: Callable[[str], torch.Tensor],
) -> Callable[..., Dense]:
    """Builds one `Dense` from projections that share their input: their weights (read
    with `weight`) and biases (when every one has one) stacked along the outputs."""

    def fused(*projections: str) -> Dense:
        stacked = torch.cat([weight(p) for p in projections])
        with_bias = all(f"{p}.bias" in names for p in projections)
        bias = torch.cat([tensor(f"{p}.bias") for p in projections]) if with_bias else None
        return Dense(stacked, bias)

    return fused


def _layers(
    config: LlamaConfig, norm: Callable[[str], torch.Tensor], fused: Callable[..., Projection]
) -> list[LlamaLayer]:
    """Every decoder layer: its norms read with `norm`, its projections (q/k/v together,
    gate/up together) built with `fused` from the checkpoint's names."""
    layers = []
    for i in range(config.layers):
        prefix = f"model.layers.{i}"
        attention, mlp = f"{prefix}.self_attn", f"{prefix}.mlp"
        layers.append(
            LlamaLayer(
                input_norm=norm(f"{prefix}.input_layernorm.weight"),
                qkv=fused(f"{attention}.q_proj", f"{attention}.k_proj", f"{attention}.v_proj"),
                output=fused(f"{attention}.o_proj"),
                post_norm=norm(f"{prefix}.post_attention_layernorm.weight"),
                gate_up=fused(f"{mlp}.gate_proj", f"{mlp}.up_proj"),
                down=fused(f"{mlp}.down_proj"),
            )
        )
    return layers


def _get(stored: Any, name: str) -> torch.Tensor:
    """A tensor from an open safetensors file (typed: the library's own stubs are not)."""
    tensor: torch.Tensor = stored.get_tensor(name)
    return tensor


def read_generation_eos(directory: Path) -> list[Any]:
    """The end-of-sequence ids of `generation_config.json` (or `config.json`)."""
    for name in ("generation_config.json", "config.json"):
        value = read_object(directory / name)
        if value.get("eos_token_id") is not None:
            eos = value["eos_token_id"]
            return list(eos) if isinstance(eos, list) else [eos]
    return []
