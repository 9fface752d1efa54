"""The generator client: one streaming `POST /v1/generate`, read line by line, bounded in time.

`open()` gets as far as the response headers, so refusals (bad field, overload) are
known before the gateway commits to a response. `UpstreamStream.events()` then
yields parsed NDJSON events and guarantees the caller one of two outcomes: a
terminal `done`/`error` event, or a raised `ServiceError` — never a silent end and
never an unbounded wait. Closing the stream closes the connection, which is how a
client's disconnect reaches the generator and stops its model loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from gateway.errors import (
    GeneratorFailed,
    UpstreamBroken,
    UpstreamTimeout,
    UpstreamUnavailable,
    from_response,
)
from gateway.settings import Settings
from streamkit.events import DoneEvent, ErrorEvent, Event, TokenEvent, from_ndjson
from streamkit.requestid import HEADER as REQUEST_ID_HEADER

_MAX_LINE_BYTES = 1 << 20
_MAX_ERROR_BODY_BYTES = 64 * 1024


@dataclass
class Received:
    """One upstream event and when its line arrived (for the added-latency histogram)."""

    event: Event
    at: float


class UpstreamStream:
    def __init__(self, response: httpx.Response, settings: Settings) -> None:
        self._response = response
        self._settings = settings

    async def events(self) -> AsyncIterator[Received]:
        """Events up to and including the terminal one. A generator `error` event is
        raised as `GeneratorFailed`; every other failure as an `UpstreamError`."""
        loop = asyncio.get_running_loop()
        chunks = self._response.aiter_bytes()
        buffer = b""
        index = 0
        silence = self._settings.first_token_timeout_s
        while True:
            deadline = loop.time() + silence
            while b"\n" not in buffer:
                if len(buffer) > _MAX_LINE_BYTES:
                    raise UpstreamBroken("generator sent an over-long line", kind="malformed")
                try:
                    async with asyncio.timeout_at(deadline):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    raise UpstreamBroken(
                        "generator stream ended without a done or error event"
                    ) from None
                except TimeoutError:
                    phase = "before the first token" if index == 0 else "between tokens"
                    raise UpstreamTimeout(
                        f"generator sent nothing for {silence:g}s {phase}"
                    ) from None
                except httpx.HTTPError as exc:
                    raise UpstreamBroken(
                        f"generator connection failed mid-stream: {exc!r}"
                    ) from None
                buffer += chunk
            line, buffer = buffer.split(b"\n", 1)
            if not line.strip():
                continue
            arrived = time.perf_counter()
            try:
                event = from_ndjson(line)
            except ValidationError as exc:
                problem = exc.errors()[0]
                where = ".".join(str(part) for part in problem["loc"])
                detail = f"{where}: {problem['msg']}" if where else problem["msg"]
                raise UpstreamBroken(
                    f"generator sent a malformed line: {detail}", kind="malformed"
                ) from None
            if isinstance(event, TokenEvent) and event.index != index:
                raise UpstreamBroken(
                    f"generator sent token {event.index} where {index} was due", kind="malformed"
                )
            if isinstance(event, ErrorEvent):
                raise GeneratorFailed(event)
            yield Received(event, arrived)
            if isinstance(event, DoneEvent):
                return
            if isinstance(event, TokenEvent):
                index += 1
                silence = self._settings.token_timeout_s

    async def aclose(self) -> None:
        await self._response.aclose()


def _auth(settings: Settings) -> httpx.Auth | None:
    """SigV4 signing when the generator sits behind an IAM-protected Function URL.
    Imported only then: botocore is a noticeable share of a cold start."""
    if settings.generator_auth == "none":
        return None
    from gateway.sigv4 import generator_auth

    return generator_auth(settings.generator_auth)


class GeneratorClient:
    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None):
        self._settings = settings
        # Connect/pool bounds live here; silences are bounded per line in `events()`.
        timeout = httpx.Timeout(
            connect=settings.connect_timeout_s,
            pool=settings.connect_timeout_s,
            write=settings.connect_timeout_s,
            read=None,
        )
        self.http = httpx.AsyncClient(
            base_url=settings.generator_url,
            transport=transport,
            auth=_auth(settings),
            timeout=timeout,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
        )

    async def open(self, body: dict[str, Any], request_id: str) -> UpstreamStream:
        """Send the request and wait for the generator's answer (bounded by the first-token
        timeout). Raises the error to relay when it refuses or cannot be reached."""
        request = self.http.build_request(
            "POST", "/v1/generate", json=body, headers={REQUEST_ID_HEADER: request_id}
        )
        try:
            async with asyncio.timeout(self._settings.first_token_timeout_s):
                response = await self.http.send(request, stream=True)
        except TimeoutError:
            raise UpstreamTimeout(
                f"generator did not answer within {self._settings.first_token_timeout_s:g}s"
            ) from None
        except httpx.TimeoutException:
            raise UpstreamUnavailable(
                f"generator not reachable within {self._settings.connect_timeout_s:g}s"
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"generator not reachable: {exc!r}") from None
        if response.status_code != 200:
            try:
                content = await self._read_bounded(response)
            finally:
                await response.aclose()
            raise from_response(response.status_code, response.headers, content)
        return UpstreamStream(response, self._settings)

    @staticmethod
    async def _read_bounded(response: httpx.Response) -> bytes:
        body = b""
        try:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > _MAX_ERROR_BODY_BYTES:
                    break
        except httpx.HTTPError:
            pass
        return body[:_MAX_ERROR_BODY_BYTES]

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """The generator's `/readyz` answer: (ready, body). Unreachable → (False, reason)."""
        try:
            response = await self.http.get("/readyz", timeout=self._settings.connect_timeout_s)
        except httpx.HTTPError as exc:
            return False, {"status": "unreachable", "error": repr(exc)}
        try:
            body = response.json()
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        return response.status_code == 200, body

    async def aclose(self) -> None:
        await self.http.aclose()
