"""Models for tests: the converted real default, and a tiny random GPT-2 built on the fly.

The tiny GPT-2 uses the real SmolLM2 tokenizer, so its random output is full of byte
tokens that split multi-byte characters — exactly what streaming must survive — and
it exercises the GPT-2 code path while running in milliseconds per token.
"""

from __future__ import annotations

from pathlib import Path

from generator.settings import default_model_dir


def real_model_dir() -> Path:
    """The converted SmolLM2 directory; fails loudly (never skips) when missing."""
    path = default_model_dir()
    if not (path / "config.json").is_file():
        raise RuntimeError(f"{path} is missing: run `make model` first")
    return path


def build_tiny(target: Path, architecture: str, *, seed: int = 0, **config: object) -> Path:
    """Save a randomly initialised transformers `architecture` (e.g. "Llama") with the
    SmolLM2 tokenizer into `target`; `config` holds its sizes."""
    import torch
    import transformers
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(real_model_dir())
    torch.manual_seed(seed)
    config_class = getattr(transformers, f"{architecture}Config")
    model_class = getattr(transformers, f"{architecture}ForCausalLM", None) or getattr(
        transformers, f"{architecture}LMHeadModel"
    )
    model_config = config_class(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **config,
    )
    model_class(model_config).save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def build_tiny_gpt2(target: Path, *, seed: int = 0, layers: int = 2, context: int = 1024) -> Path:
    """A randomly initialised 2-layer GPT-2 with the SmolLM2 tokenizer, saved into `target`."""
    return build_tiny(
        target, "GPT2", seed=seed, n_positions=context, n_embd=64, n_layer=layers, n_head=2
    )


# The sizes of a tiny Llama-family decoder (Llama, Mistral, Qwen2...): widths that are whole
# 4-bit blocks, grouped-query attention with one key/value head.
TINY_DECODER: dict[str, int] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
}


def build_tiny_llama(target: Path, *, seed: int = 0) -> Path:
    """A randomly initialised 2-layer Llama (the default model's architecture, with
    widths that are whole 4-bit blocks) with the SmolLM2 tokenizer, saved into `target`."""
    return build_tiny(
        target, "Llama", seed=seed, max_position_embeddings=512, tie_word_embeddings=True,
        **TINY_DECODER,
    )  # fmt: skip
