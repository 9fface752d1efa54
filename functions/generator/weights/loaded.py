"""The model as start-up loads it: `load(settings)` is the one way a process gets a model.

It resolves where and in what precision to serve (`DEVICE`, `DTYPE`, `WEIGHTS`) and
with which decoder (`DECODER`): the native one for the Llama family
(`generator.weights.llama`, `generator.decode.llama`), which never imports transformers'
modeling code, or transformers' (`generator.weights.checkpoint`, with the low-bit layers
of `generator.weights.lowbit` swapped in). It reads the tokenizer and works out which
tokens end a completion.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from generator.decode.decoder import Decoder
from generator.decode.llama import LlamaDecoder
from generator.settings import Settings
from generator.weights.checkpoint import read_tokenizer
from generator.weights.llama import LlamaConfig, has_weights, read_generation_eos, read_llama
from generator.weights.lowbit import cpu_has_bfloat16, serves_lowbit
from generator.weights.memory import release_freed_memory, return_freed_memory_promptly
from streamkit.errors import ModelUnavailable

# Tokens that end a completion in every GPT-2-family vocabulary, in addition to the
# model's configured EOS (an instruct model's EOS is often the chat end-of-turn).
_EXTRA_EOS_TOKENS = ("<|endoftext|>",)


@dataclass(frozen=True)
class LoadedModel:
    # The weights: `LlamaWeights` for the native decoder, else transformers' model.
    model: Any
    tokenizer: Any
    device: str
    eos_ids: frozenset[int]
    context_length: int
    decoder: Decoder
    # What the weights are served as: "lowbit" (4-bit layers, int8 head) or a dtype name.
    weights: str = "float32"


def resolve_device(setting: str) -> str:
    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting == "cuda" and not torch.cuda.is_available():
        raise ModelUnavailable("DEVICE=cuda but no CUDA device is available")
    return setting


def resolve_dtype(setting: str, device: str) -> torch.dtype:
    """`auto` is bfloat16 wherever the hardware computes it natively: on CUDA, and on CPUs
    whose oneDNN has bfloat16 kernels (AVX-512 or AMX on x86). Decoding is bound by
    reading the weights, so half the bytes is ~1.5x the tokens per second there, and
    bfloat16 passes the quality gate (`generator.prepare.quality`). Elsewhere bfloat16 would be
    emulated, slower than float32, so `auto` stays float32."""
    if setting == "auto":
        native = device == "cuda" or (device == "cpu" and cpu_has_bfloat16())
        return torch.bfloat16 if native else torch.float32
    dtype: torch.dtype = getattr(torch, setting)
    return dtype


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", ".", "~")) or Path(model).exists()


def served_precision(settings: Settings) -> str:
    """What `load(settings)` will serve: "lowbit" or a dtype name."""
    device = resolve_device(settings.device)
    directory = Path(settings.model).expanduser()
    local = directory if directory.is_dir() else None
    if serves_lowbit(settings.weights, settings.dtype, device, local):
        return "lowbit"
    return str(resolve_dtype(settings.dtype, device)).removeprefix("torch.")


def load(settings: Settings) -> LoadedModel:
    """Load MODEL (a local directory or a Hugging Face id) onto the configured device."""
    if _looks_like_path(settings.model) and not Path(settings.model).expanduser().is_dir():
        raise ModelUnavailable(
            f"model directory {settings.model} does not exist; run `make model` to prepare "
            "the default model, or set MODEL to a Hugging Face id or a local directory"
        )
    return_freed_memory_promptly()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    precision = served_precision(settings)
    tokenizer = read_tokenizer(settings.model)
    directory = Path(settings.model).expanduser()
    llama = native_config(settings, precision)
    model: Any
    decoder: Decoder
    if llama is not None:
        model = read_llama(directory, llama, precision, device)
        decoder = LlamaDecoder(model)
        configured_eos = read_generation_eos(directory)
        context_length = llama.context_length
    else:
        # Imported only here: transformers' modeling code costs a cold start seconds.
        from generator.decode.batch import TransformersDecoder
        from generator.weights.checkpoint import read_causal_lm
        from generator.weights.lowbit import read_lowbit_model

        if precision == "lowbit":
            model = read_lowbit_model(directory)
        else:
            model = read_causal_lm(settings.model, dtype)
            model.to(device).eval()
        decoder = TransformersDecoder(model, device)
        configured_eos = _as_list(model.generation_config.eos_token_id)
        context_length = int(model.config.max_position_embeddings)

    release_freed_memory()
    eos_ids = {int(i) for i in [*configured_eos, tokenizer.eos_token_id] if i is not None}
    for token in _EXTRA_EOS_TOKENS:
        if token in tokenizer.all_special_tokens:
            eos_ids.update(_as_list(tokenizer.convert_tokens_to_ids(token)))
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        device=device,
        eos_ids=frozenset(eos_ids),
        context_length=context_length,
        decoder=decoder,
        weights=precision,
    )


def native_config(settings: Settings, precision: str) -> LlamaConfig | None:
    """The model's config when the native decoder serves it (`DECODER`) in `precision`
    (`served_precision`), else None."""
    directory = Path(settings.model).expanduser()
    if settings.decoder == "transformers" or not directory.is_dir():
        config = None
    else:
        config = LlamaConfig.read(directory)
        if config is not None and not has_weights(directory, precision):
            config = None
    if settings.decoder == "native" and config is None:
        raise ModelUnavailable(
            f"DECODER=native serves a local directory of a Llama-family model (llama, "
            f"mistral, qwen2 with default rotary positions); {settings.model} is not one"
        )
    return config


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]
