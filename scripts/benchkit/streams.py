"""Clients that time token arrivals: the generator's NDJSON, the gateway's SSE, and a TCP
tap between them that sees when each token line leaves the generator."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
from httpx_sse import connect_sse
from pydantic import ValidationError

from benchkit.servers import free_port
from streamkit.events import ErrorEvent, Event, TokenEvent, from_ndjson


class Tap:
    """A TCP relay (own thread, own event loop) that timestamps token lines going by.

    The generator writes each NDJSON event as one HTTP chunk, so every event is a whole
    line between the chunked encoding's size lines: the tap reads the lines of the bytes
    it relays and keeps those that are token events."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.seen: dict[int, float] = {}
        self._ready = threading.Event()
        threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True).start()
        self._ready.wait(10)

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self._ready.set()
        async with server:
            await server.serve_forever()

    async def _handle(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pump(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tap: bool
        ) -> None:
            partial = b""
            try:
                while data := await reader.read(65536):
                    if tap:
                        now = time.perf_counter()
                        *lines, partial = (partial + data).split(b"\n")
                        for line in lines:
                            if (event := _event(line)) and isinstance(event, TokenEvent):
                                self.seen.setdefault(event.index, now)
                    writer.write(data)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()

        await asyncio.gather(pump(down_r, up_w, False), pump(up_r, down_w, True))


def _event(line: bytes) -> Event | None:
    """The event a relayed line holds; None for HTTP framing and headers."""
    if not line.startswith(b"{"):
        return None
    try:
        return from_ndjson(line)
    except ValidationError:
        return None


def direct_run(url: str, body: dict[str, Any]) -> list[float]:
    """Token arrival times reading the generator's NDJSON directly."""
    times, buffer = [], b""
    with httpx.stream("POST", url + "/v1/generate", json=body, timeout=600) as response:
        response.raise_for_status()
        for chunk in response.iter_bytes():
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                event = from_ndjson(line)
                if isinstance(event, TokenEvent):
                    times.append(time.perf_counter())
                elif isinstance(event, ErrorEvent):
                    raise RuntimeError(event)
    return times


def gateway_run(url: str, body: dict[str, Any]) -> tuple[list[float], dict[int, float]]:
    """Token arrival times (and by index) reading the gateway's SSE stream."""
    arrivals: dict[int, float] = {}
    with (
        httpx.Client(timeout=600) as client,
        connect_sse(client, "GET", url + "/generate", params=body) as source,
    ):
        for sse in source.iter_sse():
            if sse.event == "token":
                arrivals[int(sse.id)] = time.perf_counter()
            elif sse.event == "error":
                raise RuntimeError(sse.data)
    return [arrivals[i] for i in sorted(arrivals)], arrivals
