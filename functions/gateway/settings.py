"""Gateway settings, read from environment variables (names are the field names, upper-case).

The timeouts are the gateway's promise that a stream never hangs: whatever the
generator does, the client gets an `error` event within the configured bound.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streamkit.generation import GenerationLimits

# How the gateway authenticates to the generator (`gateway.sigv4` does the signing).
GeneratorAuthMode = Literal["none", "sigv4"]


class Settings(GenerationLimits, BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    generator_url: str = Field(
        "http://127.0.0.1:8001", description="Base URL of the generator function."
    )
    model_name: str | None = Field(
        None,
        description="The served model's name for `/v1/models`; set, that endpoint answers "
        "without calling the generator (which may be asleep). Unset: the generator's.",
    )
    generator_auth: GeneratorAuthMode = Field(
        "none",
        description="How the gateway authenticates to the generator: `none`, or `sigv4` "
        "(AWS SigV4 for a Function URL with AuthType AWS_IAM; credentials and AWS_REGION "
        "from the Lambda environment).",
    )
    allowed_origins: str = Field(
        "http://localhost:8080,http://127.0.0.1:8080",
        description="Comma-separated origins allowed by CORS (the static page's origin); "
        "`*` allows any.",
    )
    start_secret: SecretStr | None = Field(
        None,
        description="HMAC key that signs `POST /start` ids. Unset: a random key per process "
        "(ids then only work on the instance that issued them), with a warning.",
    )
    api_keys: SecretStr | None = Field(
        None,
        description="API keys for `/v1/*`, comma-separated (several: rotate without a gap); "
        "each request then needs `Authorization: Bearer <key>`. Unset: open.",
    )
    max_streams: int = Field(
        1000,
        ge=1,
        description="Streams this gateway instance holds at once; past it: 503 + Retry-After "
        "(an `error` event with `retry_after_s` on the SSE routes).",
    )
    retry_after_s: int = Field(
        2, ge=1, description="Retry-After sent when this gateway is at MAX_STREAMS."
    )
    start_ttl_s: int = Field(300, ge=1, description="How long a start id stays valid, seconds.")
    ping_interval_s: float = Field(
        15.0, ge=0, description="Seconds between `: ping` comments on idle streams; 0 = off."
    )
    connect_timeout_s: float = Field(
        5.0, gt=0, description="Connecting to the generator (and answering /readyz), seconds."
    )
    first_token_timeout_s: float = Field(
        120.0,
        gt=0,
        description="Longest silence from the generator before the first token (queueing, "
        "model loading), seconds; each `status` line restarts it.",
    )
    token_timeout_s: float = Field(
        30.0, gt=0, description="Longest silence from the generator between tokens, seconds."
    )
    send_timeout_s: float = Field(
        30.0, gt=0, description="Longest wait for a slow client to take one event, seconds."
    )
    log_level: str = Field("info", description="Python log level of the gateway process.")

    @field_validator("generator_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("GENERATOR_URL must start with http:// or https://")
        return value.rstrip("/")

    @property
    def origins(self) -> list[str]:
        return [origin.strip() for origin in self.allowed_origins.split(",") if origin.strip()]

    @property
    def keys(self) -> list[str]:
        """The API keys, each stripped; empty when API_KEYS is unset."""
        raw = self.api_keys.get_secret_value() if self.api_keys else ""
        return [key.strip() for key in raw.split(",") if key.strip()]
