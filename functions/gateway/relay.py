"""One relayed generation: open the generator's stream, pass its events on, account for it.

Both the SSE endpoints and the OpenAI ones consume `Relay.open()`: an async iterator
of the generator's events that always ends with exactly one `done` or `error` event
(failures on the way become an `error` event), and whose `finally` closes the
upstream connection — so a client that goes away stops the generator's work.
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
from streamkit.errors import ServiceError
from streamkit.events import DoneEvent, ErrorEvent, Event, TokenEvent

log = logging.getLogger("gateway.relay")

_CLOSE_TIMEOUT_S = 5.0


async def only_error(error: ServiceError) -> AsyncIterator[Event]:
    """A stream holding just the error event: failures before the first byte, for clients
    (browser `EventSource`) that cannot read the body of a non-200 answer."""
    yield ErrorEvent.from_error(error)


class Relay:
    def __init__(self, settings: Settings, client: GeneratorClient, metrics: GatewayMetrics):
        self.settings = settings
        self.client = client
        self.metrics = metrics

    def count_error(self, error: ServiceError) -> None:
        self.metrics.upstream_errors.labels(kind=error_kind(error)).inc()

    async def open(
        self, params: GenerationParams, request_id: str, endpoint: str
    ) -> AsyncGenerator[Event, None]:
        """Start the generation upstream. Raises (counted) when the generator refuses or
        cannot be reached, so callers can still answer with an HTTP error."""
        try:
            stream = await self.client.open(params.wire_body(), request_id)
        except ServiceError as error:
            self.count_error(error)
            self.metrics.streams.labels(endpoint=endpoint, outcome=error.code).inc()
            raise
        return self._relay(stream, endpoint)

    async def _relay(self, stream: UpstreamStream, endpoint: str) -> AsyncGenerator[Event, None]:
        started = time.perf_counter()
        tokens = 0
        outcome = "cancelled"  # unless the loop below reaches a terminal event
        self.metrics.active_streams.inc()
        try:
            try:
                async for received in stream.events():
                    event = received.event
                    if isinstance(event, DoneEvent):
                        outcome = "done"
                    yield event
                    if isinstance(event, TokenEvent):
                        # Resumed only once the consumer has handed the event on.
                        self.metrics.added_latency.observe(time.perf_counter() - received.at)
                        self.metrics.relayed_tokens.inc()
                        tokens += 1
            except ServiceError as error:
                self.count_error(error)
                outcome = error.code
                yield ErrorEvent.from_error(error)
        finally:
            # Shielded: this also runs when the client's disconnect cancels the stream,
            # and closing the connection is what tells the generator to stop.
            with anyio.CancelScope(shield=True), anyio.move_on_after(_CLOSE_TIMEOUT_S):
                await stream.aclose()
            self.metrics.active_streams.dec()
            self.metrics.streams.labels(endpoint=endpoint, outcome=outcome).inc()
            log.info(
                "stream finished",
                extra={
                    "fields": {
                        "endpoint": endpoint,
                        "outcome": outcome,
                        "tokens": tokens,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                    }
                },
            )
