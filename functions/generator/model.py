"""Loading a causal LM and its tokenizer, and the lean decode loop around its forward pass.

The loop calls the model directly with a KV cache instead of `generate()`: it
costs less per token and gives the caller a natural place to stop after every
token (cancellation) and to see each token as it is produced (streaming).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from generator.loading import load_causal_lm, load_tokenizer
from generator.lowbit import cpu_has_bfloat16
from generator.lowbit_model import load_lowbit_model, serves_lowbit
from generator.sampling import Sampler
from generator.settings import Settings
from streamkit.errors import InvalidRequest, ModelUnavailable

log = logging.getLogger("generator.model")

# Tokens that end a completion in every GPT-2-family vocabulary, in addition to the
# model's configured EOS (an instruct model's EOS is often the chat end-of-turn).
_EXTRA_EOS_TOKENS = ("<|endoftext|>",)


@dataclass(frozen=True)
class LoadedModel:
    model: Any
    tokenizer: Any
    device: str
    eos_ids: frozenset[int]
    context_length: int
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
    bfloat16 passes the quality gate (`generator.quality`). Elsewhere bfloat16 would be
    emulated, slower than float32, so `auto` stays float32."""
    if setting == "auto":
        native = device == "cuda" or (device == "cpu" and cpu_has_bfloat16())
        return torch.bfloat16 if native else torch.float32
    dtype: torch.dtype = getattr(torch, setting)
    return dtype


def _looks_like_path(model: str) -> bool:
    return model.startswith(("/", ".", "~")) or Path(model).exists()


def served_precision(settings: Settings) -> str:
    """What `load_model(settings)` will serve: "lowbit" or a dtype name."""
    device = resolve_device(settings.device)
    directory = Path(settings.model).expanduser()
    local = directory if directory.is_dir() else None
    if serves_lowbit(settings.weights, settings.dtype, device, local):
        return "lowbit"
    return str(resolve_dtype(settings.dtype, device)).removeprefix("torch.")


def load_model(settings: Settings) -> LoadedModel:
    """Load MODEL (a local directory or a Hugging Face id) onto the configured device."""
    if _looks_like_path(settings.model) and not Path(settings.model).expanduser().is_dir():
        raise ModelUnavailable(
            f"model directory {settings.model} does not exist; run `make model` to prepare "
            "the default model, or set MODEL to a Hugging Face id or a local directory"
        )
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)
    precision = served_precision(settings)
    tokenizer = load_tokenizer(settings.model)
    model: Any
    if precision == "lowbit":
        model = load_lowbit_model(Path(settings.model).expanduser())
    else:
        model = load_causal_lm(settings.model, dtype)
        model.to(device).eval()

    eos_ids = {
        int(i)
        for i in [*_as_list(model.generation_config.eos_token_id), tokenizer.eos_token_id]
        if i is not None
    }
    for token in _EXTRA_EOS_TOKENS:
        if token in tokenizer.all_special_tokens:
            eos_ids.update(_as_list(tokenizer.convert_tokens_to_ids(token)))
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        device=device,
        eos_ids=frozenset(eos_ids),
        context_length=int(model.config.max_position_embeddings),
        weights=precision,
    )


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def encode_prompt(lm: LoadedModel, prompt: str, chat: bool, max_new_tokens: int) -> list[int]:
    """Prompt → token ids, applying the chat template when asked; checks the context fits."""
    tokenizer = lm.tokenizer
    if chat:
        if not tokenizer.chat_template:
            raise InvalidRequest("chat", "this model has no chat template; send chat=false")
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False
        )
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        ids = tokenizer(prompt)["input_ids"]
    if len(ids) + max_new_tokens > lm.context_length:
        raise InvalidRequest(
            "max_new_tokens",
            f"prompt ({len(ids)} tokens) plus max_new_tokens ({max_new_tokens}) exceeds the "
            f"model's context of {lm.context_length} tokens",
        )
    return [int(i) for i in ids]


def prefill(lm: LoadedModel, prompt_ids: list[int]) -> tuple[torch.Tensor, Any]:
    """Run the whole prompt through the model (batch 1): (last position's logits
    [1, vocab], the KV cache holding the prompt)."""
    input_ids = torch.tensor([prompt_ids], device=lm.device)
    output = lm.model(input_ids=input_ids, use_cache=True, logits_to_keep=1)
    return output.logits[:, -1, :], output.cache


@torch.inference_mode()
def decode(
    lm: LoadedModel,
    prompt_ids: list[int],
    max_new_tokens: int,
    sampler: Sampler,
    cancel: threading.Event,
    on_forward: Callable[[], None] = lambda: None,
) -> Iterator[int]:
    """Yield generated token ids one at a time, ending after EOS, `max_new_tokens`, or
    as soon as `cancel` is set (checked before every forward pass, so a cancelled
    generation costs at most the step already running)."""
    on_forward()
    logits, cache = prefill(lm, prompt_ids)
    for step in range(max_new_tokens):
        token = sampler(logits)
        yield token
        if token in lm.eos_ids or step == max_new_tokens - 1 or cancel.is_set():
            return
        on_forward()
        next_ids = torch.tensor([[token]], device=lm.device)
        output = lm.model(input_ids=next_ids, cache=cache, use_cache=True)
        logits, cache = output.logits[:, -1, :], output.cache


def timed_load(settings: Settings) -> tuple[LoadedModel, float]:
    started = time.perf_counter()
    lm = load_model(settings)
    return lm, time.perf_counter() - started
