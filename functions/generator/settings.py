"""Generator settings, read from environment variables (names are the field names, upper-case).

Every bound a request is checked against lives here, so an operator can tune them
without touching code; the README lists each with its default.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamkit.generation import GenerationLimits

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"


def default_model_dir() -> Path:
    """Where `make model` writes the converted default model (MODEL_CACHE overrides the root)."""
    root = Path(os.environ.get("MODEL_CACHE") or PROJECT_ROOT / ".cache" / "models")
    return root / DEFAULT_MODEL_NAME


class Settings(GenerationLimits, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    model: str = Field(
        default_factory=lambda: str(default_model_dir()),
        description="Hugging Face model id or local directory of a causal LM "
        "(default: the converted SmolLM2-135M-Instruct from `make model`).",
    )
    model_name: str | None = Field(
        None,
        description="The model's name as reported (`/readyz`, the gateway's `/v1/models`); "
        "unset: the name `make model` recorded, else the directory's name or the hub id.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the model runs; `auto` picks CUDA when present."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="Weight precision; `auto` = bfloat16 on CUDA and on CPUs with native "
        "bfloat16 kernels (AVX-512/AMX: ~1.5x faster decoding, passes the quality gate), "
        "float32 elsewhere. `float32` stays selectable.",
    )
    weights: Literal["auto", "full", "lowbit"] = Field(
        "auto",
        description="`lowbit` serves the prepared low-bit weights (4-bit blocks as the "
        "GGUF stores them, int8 output head; bfloat16 activations, CPU only); `full` "
        "loads the model's safetensors in DTYPE; `auto` = `lowbit` on CPUs with native "
        "bfloat16 when the model directory has them and DTYPE is auto, else `full`.",
    )
    decoder: Literal["auto", "native", "transformers"] = Field(
        "auto",
        description="`native` decodes Llama-family models (Llama, Mistral, Qwen2: the "
        "default model's) with the generator's own batch-invariant decoder; "
        "`transformers` with transformers' modeling code (every other architecture); "
        "`auto` = native where it applies.",
    )
    torch_threads: int = Field(
        0, ge=0, description="torch intra-op threads on CPU; 0 keeps torch's default."
    )
    max_concurrency: int = Field(
        8,
        ge=1,
        le=64,
        description="Generations decoded at once, as rows of one batch (a forward pass "
        "over 8 rows costs far less than 8 over one); the rest wait in the queue.",
    )
    max_queue: int = Field(
        16, ge=0, description="Requests allowed to wait for a slot; beyond it: 503 + Retry-After."
    )
    status_interval_s: float = Field(
        5.0,
        gt=0,
        description="While a request waits (queued, or the model loading) its `status` "
        "line is repeated this often, so proxies and the gateway see a live stream.",
    )
    retry_after_s: int = Field(2, ge=1, description="Retry-After sent with a 503 when overloaded.")
    default_max_new_tokens: int = Field(
        128, ge=1, description="`max_new_tokens` when a request leaves it out."
    )
    log_level: str = Field("info", description="Python log level of the generator process.")

    @property
    def served_name(self) -> str:
        """What to call the served model: MODEL_NAME, else the name `make model` wrote
        into the directory's marker, else the directory's name (or the hub id)."""
        if self.model_name:
            return self.model_name
        directory = Path(self.model).expanduser()
        try:
            recorded = json.loads((directory / "prepared.json").read_text()).get("name")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if isinstance(recorded, str) and recorded:
            return recorded
        return directory.name if directory.is_dir() else self.model

    @model_validator(mode="after")
    def _default_within_limit(self) -> Settings:
        if self.default_max_new_tokens > self.max_new_tokens_limit:
            raise ValueError("DEFAULT_MAX_NEW_TOKENS must not exceed MAX_NEW_TOKENS_LIMIT")
        return self


def precision_settings(precision: str) -> dict[str, str]:
    """The settings that serve one named precision, as the benchmark and the quality
    gate name them: `lowbit`, or a DTYPE served from the full weights."""
    if precision == "lowbit":
        return {"weights": "lowbit"}
    return {"weights": "full", "dtype": precision}
