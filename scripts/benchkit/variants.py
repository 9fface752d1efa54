"""What the benchmark calls an engine variant: a precision, optionally with the decoder.

`lowbit`, `bfloat16`, `float32`, `float16` are served as the generator serves them by
default (the native decoder for the default model); a `/transformers` suffix
(`lowbit/transformers`) runs the same precision through transformers' modeling code,
the path every other architecture takes, so the two decoders sit side by side.
"""

from __future__ import annotations

TRANSFORMERS_SUFFIX = "/transformers"


def precision_of(variant: str) -> str:
    return variant.removesuffix(TRANSFORMERS_SUFFIX)


def variant_settings(variant: str) -> dict[str, str]:
    """The generator settings (lower-case field names) that serve `variant`."""
    from generator.settings import precision_settings

    settings = precision_settings(precision_of(variant))
    if variant.endswith(TRANSFORMERS_SUFFIX):
        settings["decoder"] = "transformers"
    return settings
