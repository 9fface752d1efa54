"""A load source for measuring the gateway alone: a stand-in that speaks the generator's
wire protocol but has no model behind it.

`POST /v1/generate` answers the generator's NDJSON (`token` lines, then one `done`) with
canned token text at a fixed pace: one token every `PACED_TOKEN_INTERVAL_S` seconds,
`max_new_tokens` of them. `/healthz` and `/readyz` answer 200. It exists because the
real generator cannot serve a thousand generations at once (at most `MAX_CONCURRENCY`
= 64 run, the rest queue), and because the gateway's own capacity should be measured
without a model competing for the same cores. Figures taken with it describe the
gateway, never the generator.

`PACED_HOLD_FOR_STREAMS=N` makes it prove concurrency instead of hoping for it: every
stream sends its first token, then waits until N generations are open here at the same
time (only a gateway holding N streams at once can get there) before sending the rest;
after `PACED_HOLD_TIMEOUT_S` without that, each waiting stream ends with an `error` line.

`PACED_SCRIPT=text` makes every answer that text instead, a few characters a token and
at most `max_new_tokens` tokens: an answer the page's tests know in advance (Markdown,
raw HTML a model might write), which no random model would produce.

A pure ASGI app (no framework) so that its own cost per token stays small next to the
gateway's: `uvicorn --factory devtools.paced_upstream:create_app` with `functions/` and
`scripts/` on the path (`devtools.processes.ServerProcess` sets it). Its lines are the
generator's own events (`streamkit.events`).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from streamkit.events import DoneEvent, ErrorEvent, Timings, TokenEvent, Usage, to_ndjson

Scope = dict[str, Any]
Receive = Any
Send = Any

_TEXT = " word"


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


_SCRIPT_PIECE_CHARS = 4


class PacedUpstream:
    def __init__(
        self,
        token_interval_s: float,
        hold_for_streams: int = 0,
        hold_timeout_s: float = 60.0,
        script: str = "",
    ) -> None:
        self.token_interval_s = token_interval_s
        self.script = [
            script[i : i + _SCRIPT_PIECE_CHARS] for i in range(0, len(script), _SCRIPT_PIECE_CHARS)
        ]
        self.hold_for_streams = hold_for_streams
        self.hold_timeout_s = hold_timeout_s
        self.open_streams = 0
        self.peak_streams = 0
        self._all_in: asyncio.Event | None = None  # made on the server's event loop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path, method = scope["path"], scope["method"]
        if path in ("/healthz", "/readyz"):
            counts = {"open_streams": self.open_streams, "peak_streams": self.peak_streams}
            await _send_json(send, 200, {"status": "ready", **counts})
        elif path == "/v1/generate" and method == "POST":
            self.open_streams += 1
            self.peak_streams = max(self.peak_streams, self.open_streams)
            try:
                await self._generate(receive, send)
            finally:
                self.open_streams -= 1
        else:
            await _send_json(send, 404, {"error": {"code": "not_found", "message": path}})

    async def _held(self) -> bool:
        """After a first token: wait for `hold_for_streams` open at once (True), or give up."""
        if self._all_in is None:
            self._all_in = asyncio.Event()
        if self.open_streams >= self.hold_for_streams:
            self._all_in.set()
        try:
            await asyncio.wait_for(self._all_in.wait(), self.hold_timeout_s)
        except TimeoutError:
            return False
        return True

    async def _generate(self, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request = json.loads(await _read_body(receive))
        count = int(request.get("max_new_tokens", 16))
        if self.script:
            count = min(count, len(self.script))
        headers = [(b"content-type", b"application/x-ndjson")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        # The gateway closing its request (its client went away) ends the stream here too,
        # as it ends the real generator's loop.
        gone = asyncio.ensure_future(receive())
        first = 0.0
        try:
            for index in range(count):
                if index == 1 and self.hold_for_streams and not await self._held():
                    message = f"fewer than {self.hold_for_streams} streams were open at once"
                    error = ErrorEvent(code="hold_timeout", message=message)
                    await send({"type": "http.response.body", "body": to_ndjson(error)})
                    return
                if index:
                    await asyncio.sleep(self.token_interval_s)
                if gone.done():
                    return
                text = self.script[index] if self.script else _TEXT
                token = to_ndjson(TokenEvent(index=index, text=text))
                await send({"type": "http.response.body", "body": token, "more_body": True})
                first = first or time.perf_counter()
            total = time.perf_counter() - started
            done = DoneEvent(
                finish_reason="length",
                usage=Usage(prompt_tokens=1, completion_tokens=count),
                timings=Timings(
                    queue_ms=0.0,
                    ttft_ms=round((first - started) * 1e3, 3),
                    total_ms=round(total * 1e3, 3),
                    tokens_per_s=round(count / total, 3) if total else 0.0,
                ),
            )
            await send({"type": "http.response.body", "body": to_ndjson(done)})
        finally:
            gone.cancel()


def create_app() -> PacedUpstream:
    """The uvicorn factory, configured from the environment (see the module docstring)."""
    return PacedUpstream(
        token_interval_s=float(os.environ.get("PACED_TOKEN_INTERVAL_S", "0.1")),
        hold_for_streams=int(os.environ.get("PACED_HOLD_FOR_STREAMS", "0")),
        hold_timeout_s=float(os.environ.get("PACED_HOLD_TIMEOUT_S", "60")),
        script=os.environ.get("PACED_SCRIPT", ""),
    )
