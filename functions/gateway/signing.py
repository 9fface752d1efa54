"""Stateless start ids: the generation parameters themselves, compressed and HMAC-signed.

`POST /start` and `GET /generate?id=` may land on different instances (Lambda), so
nothing is stored: the id carries its parameters and an expiry, and the signature
proves this gateway issued them unchanged. Format: `v1.<payload>.<signature>`, both
parts base64url without padding; the payload is zlib-compressed JSON.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import math
import secrets
import time
import zlib
from typing import Any

from gateway.settings import Settings
from streamkit.errors import InvalidRequest, ServiceError

log = logging.getLogger("gateway.signing")

VERSION = "v1"
# Ids travel in a URL: keep them well under common request-line limits (8 KiB).
MAX_ID_CHARS = 6000
_MAX_PAYLOAD_BYTES = 256 * 1024
# The shape of an id, for the OpenAPI document (only the signature tells a real one).
ID_SCHEMA = {
    "type": "string",
    "pattern": rf"^{VERSION}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
    "maxLength": MAX_ID_CHARS,
    "description": "A start id from POST /start.",
}


class StartIdExpired(ServiceError):
    status_code = 410
    code = "start_id_expired"

    def __init__(self) -> None:
        super().__init__("id: this start id has expired; call POST /start again", field="id")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _invalid(problem: str) -> InvalidRequest:
    return InvalidRequest("id", f"not a valid start id ({problem})")


class StartIdSigner:
    def __init__(self, secret: bytes, ttl_s: int) -> None:
        self._key = hashlib.sha256(b"gateway-start-id\0" + secret).digest()
        self.ttl_s = ttl_s

    @classmethod
    def from_settings(cls, settings: Settings) -> StartIdSigner:
        if settings.start_secret is None or not settings.start_secret.get_secret_value():
            log.warning(
                "START_SECRET is not set: start ids are signed with a random per-process key "
                "and only work on this instance"
            )
            return cls(secrets.token_bytes(32), settings.start_ttl_s)
        return cls(settings.start_secret.get_secret_value().encode(), settings.start_ttl_s)

    def _sign(self, payload: str) -> str:
        mac = hmac.new(self._key, f"{VERSION}.{payload}".encode("ascii"), hashlib.sha256)
        return _b64encode(mac.digest())

    def issue(self, params: dict[str, Any], *, now: float | None = None) -> str:
        """A signed id for `params`, valid for `ttl_s` seconds from `now`."""
        # Rounded up: the id lives at least `ttl_s` seconds, never a fraction less.
        expires = math.ceil((now if now is not None else time.time()) + self.ttl_s)
        body = json.dumps({"exp": expires, "params": params}, separators=(",", ":"))
        payload = _b64encode(zlib.compress(body.encode(), 9))
        start_id = f"{VERSION}.{payload}.{self._sign(payload)}"
        if len(start_id) > MAX_ID_CHARS:
            field = "messages" if "messages" in params else "prompt"
            raise InvalidRequest(
                field,
                f"too long to fit a start id ({len(start_id)} > {MAX_ID_CHARS} characters); "
                "send the same body to POST /generate instead",
            )
        return start_id

    def verify(self, start_id: str, *, now: float | None = None) -> dict[str, Any]:
        """The parameters inside a genuine, unexpired id; `InvalidRequest`/`StartIdExpired`
        otherwise. The signature is checked before anything in the payload is trusted."""
        parts = start_id.split(".")
        if (
            len(start_id) > MAX_ID_CHARS
            or not start_id.isascii()  # an id is base64url: anything else is not one
            or len(parts) != 3
            or parts[0] != VERSION
        ):
            raise _invalid("malformed")
        _, payload, signature = parts
        if not hmac.compare_digest(signature, self._sign(payload)):
            raise _invalid("signature mismatch: forged, altered, or signed by another key")
        try:
            inflater = zlib.decompressobj()
            raw = inflater.decompress(_b64decode(payload), _MAX_PAYLOAD_BYTES)
            body = json.loads(raw)
            expires, params = body["exp"], body["params"]
        except (binascii.Error, zlib.error, ValueError, KeyError, TypeError):
            raise _invalid("unreadable payload") from None
        if not isinstance(expires, int) or not isinstance(params, dict):
            raise _invalid("unreadable payload")
        if (now if now is not None else time.time()) >= expires:
            raise StartIdExpired()
        return params
