"""One relayed generation: open the generator's stream, pass its events on, account for it.

Both the SSE endpoints and the OpenAI ones consume `Relay.open()`: a `Relayed` whose
`events()` always end with exactly one `done` or `error` event (failures on the way
become an `error` event), and whose `close()` closes the upstream connection — so a
client that goes away stops the generator's work. `close()` runs when `events()` ends
and again, harmlessly, when the response ends: a response whose client left before the
first event never starts `events()`, and its upstream connection is closed all the same.

The gateway holds at most MAX_STREAMS at once; past that a request is refused before
anything is opened (`GatewayBusy`: 503 + Retry-After, or one `error` event on a stream).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator

import anyio

from gateway.errors import error_kind
from gateway.metrics import GatewayMetrics
from gateway.protocol import GenerationParams
from gateway.settings import Settings
from gateway.upstream import GeneratorClient, UpstreamStream
from streamkit.errors import Overloaded, ServiceError
from streamkit.events import DoneEvent, ErrorEvent, Event, TokenEvent

log = logging.getLogger("gateway.relay")

_CLOSE_TIMEOUT_S = 5.0


class GatewayBusy(Overloaded):
    """This gateway instance holds MAX_STREAMS streams already."""

    kind = "busy"


async def only_error(error: ServiceError) -> AsyncIterator[Event]:
    """A stream holding just the error event: failures before the first byte, for clients
    (browser `EventSource`) that cannot read the body of a non-200 answer."""
    yield ErrorEvent.from_error(error)


class Relay:
    def __init__(self, settings: Settings, client: GeneratorClient, metrics: GatewayMetrics):
        self.settings = settings
        self.client = client
        self.metrics = metrics
        self.held = 0  # streams opened and not yet closed, against MAX_STREAMS

    def hold(self, change: int) -> None:
        """A stream's place taken (+1) or given back (-1): from the request to the
        generator until the stream is closed, opening included (what MAX_STREAMS
        bounds, and what `gateway_active_streams` shows)."""
        self.held += change
        self.metrics.active_streams.inc(change)

    def count_error(self, error: ServiceError) -> None:
        self.metrics.upstream_errors.labels(kind=error_kind(error)).inc()

    async def open(self, params: GenerationParams, request_id: str, endpoint: str) -> Relayed:
        """Start the generation upstream. Raises (counted) when this gateway is full or the
        generator refuses or cannot be reached, so callers can still answer with an HTTP
        error."""
        try:
            if self.held >= self.settings.max_streams:
                raise GatewayBusy(
                    f"this gateway holds {self.held} streams, its limit (MAX_STREAMS)",
                    retry_after_s=self.settings.retry_after_s,
                )
            self.hold(+1)
            try:
                stream = await self.client.open(params.wire_body(), request_id)
            except BaseException as exc:
                self.hold(-1)
                if isinstance(exc, anyio.get_cancelled_exc_class()):  # the client left
                    self.metrics.streams.labels(endpoint=endpoint, outcome="cancelled").inc()
                raise
        except ServiceError as error:
            self.count_error(error)
            self.metrics.streams.labels(endpoint=endpoint, outcome=error.code).inc()
            raise
        return Relayed(self, stream, endpoint)


class Relayed:
    """The upstream stream of one generation, until `close()`."""

    def __init__(self, relay: Relay, stream: UpstreamStream, endpoint: str) -> None:
        self._relay = relay
        self._stream = stream
        self._endpoint = endpoint
        self._closed = False

    async def close(self) -> None:
        """Close the upstream connection and give back the stream's place (idempotent).
        Shielded: this also runs when the client's disconnect cancels the response, and
        closing the connection is what tells the generator to stop."""
        if self._closed:
            return
        self._closed = True
        self._relay.hold(-1)
        with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_TIMEOUT_S):
            await self._stream.aclose()

    async def events(self) -> AsyncGenerator[Event, None]:
        metrics = self._relay.metrics
        started = time.perf_counter()
        tokens = 0
        outcome = "cancelled"  # unless the loop below reaches a terminal event
        try:
            try:
                async for received in self._stream.events():
                    event = received.event
                    if isinstance(event, DoneEvent):
                        outcome = "done"
                    yield event
                    if isinstance(event, TokenEvent):
                        # Resumed only once the consumer has handed the event on.
                        metrics.added_latency.observe(time.perf_counter() - received.at)
                        metrics.relayed_tokens.inc()
                        tokens += 1
            except ServiceError as error:
                self._relay.count_error(error)
                outcome = error.code
                yield ErrorEvent.from_error(error)
        finally:
            await self.close()
            metrics.streams.labels(endpoint=self._endpoint, outcome=outcome).inc()
            log.info(
                "stream finished",
                extra={
                    "fields": {
                        "endpoint": self._endpoint,
                        "outcome": outcome,
                        "tokens": tokens,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    }
                },
            )
