"""The generation parameters both functions speak: one schema, validated at both hops.

The gateway refuses bad input before any stream or upstream request starts; the
generator checks again because it is callable on its own. Both use this model and
`check_limits`, so the two can never disagree about what a valid request is.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from streamkit.errors import InvalidRequest, describe_validation_error

MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 64
MAX_SEED = 2**63 - 1

StopString = Annotated[str, StringConstraints(min_length=1, max_length=MAX_STOP_CHARS)]


class GenerationParams(BaseModel):
    """One generation's parameters. Strict: `"5"` is not an int; unknown fields are errors
    (query strings are validated with `strict=False`, so `?max_new_tokens=5` works)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str = Field(min_length=1, description="Text to continue (or the user turn when chat).")
    max_new_tokens: int | None = Field(
        None, ge=1, description="Tokens to generate at most; default and cap come from settings."
    )
    temperature: float = Field(1.0, ge=0.0, le=2.0, description="0 = greedy decoding.")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int = Field(0, ge=0, le=1000, description="Sample among the k likeliest; 0 = off.")
    repetition_penalty: float = Field(1.0, gt=0.0, le=10.0, description="1.0 = off.")
    stop: list[StopString] = Field(
        default_factory=list,
        max_length=MAX_STOP_SEQUENCES,
        description="Strings that end generation; they are not emitted.",
    )
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Makes sampling reproducible.")
    chat: bool = Field(False, description="Wrap the prompt in the model's chat template.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def wire_body(self) -> dict[str, Any]:
        """The JSON body for the generator (unset optionals left out: its defaults apply)."""
        return self.model_dump(exclude_none=True)


def parse_params(data: dict[str, Any], *, strict: bool = True) -> GenerationParams:
    """`data` as generation parameters, or `InvalidRequest` naming the first bad field.
    `strict=False` for query strings, where every value arrives as text."""
    try:
        return GenerationParams.model_validate(data, strict=strict)
    except ValidationError as exc:
        raise describe_validation_error(exc.errors()) from None


def require_text(text: str, field: str) -> None:
    """A prompt (or a conversation) must hold something besides whitespace."""
    if not text.strip():
        raise InvalidRequest(field, "must contain non-whitespace text")


class GenerationLimits(BaseModel):
    """The operator-tuned bounds, a base of both functions' `Settings` (environment
    variables MAX_PROMPT_CHARS, MAX_NEW_TOKENS_LIMIT), so the two always agree."""

    max_prompt_chars: int = Field(
        16_000, ge=1, description="Longest accepted prompt, in characters."
    )
    max_new_tokens_limit: int = Field(1024, ge=1, description="Largest accepted `max_new_tokens`.")


def check_limits(params: GenerationParams, limits: GenerationLimits) -> None:
    """Check the bounds an operator tunes; raise `InvalidRequest` naming the field."""
    require_text(params.prompt, "prompt")
    if len(params.prompt) > limits.max_prompt_chars:
        raise InvalidRequest(
            "prompt", f"is {len(params.prompt)} characters; at most {limits.max_prompt_chars}"
        )
    if params.max_new_tokens is not None and params.max_new_tokens > limits.max_new_tokens_limit:
        raise InvalidRequest(
            "max_new_tokens",
            f"must be at most {limits.max_new_tokens_limit}, got {params.max_new_tokens}",
        )
