"""A scripted stand-in generator on a loopback port: the faults the real one cannot be made
to produce on demand.

It speaks raw HTTP/1.1 over TCP, one thread per connection, so it can send what no
generator would: bytes that are not HTTP, a line that is not an event, a line cut in
half, tokens out of order, a line trickled one byte at a time, nothing at all, or token
after token for as long as anyone reads. Which of these a request gets is chosen by its
prompt (or its last chat message), looked up in `scripts`; any other prompt gets a short,
well-formed generation, so the gateway that just met a fault can prove it still works.
`/healthz` and `/readyz` answer 200.

Every answer says `Connection: close` and closes: no connection to the stand-in
outlives its request, so whatever the gateway still holds open after a fault is its own.
For the scripts that hold a connection open (`Silent`, `Trickle`, `Endless`) it records
when the gateway hung up (`closed_at[prompt]`): the proof that the gateway let go of its
upstream, not only of its client.

The lines it sends are the generator's own events (`streamkit.events.to_ndjson`), except
the ones that must be malformed on purpose.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import select
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from streamkit.events import DoneEvent, Timings, TokenEvent, Usage, to_ndjson

_POLL_S = 0.05
_REASONS = {200: "OK", 404: "Not Found", 422: "Unprocessable Entity", 503: "Service Unavailable"}


def token(index: int, text: str = " word") -> bytes:
    return to_ndjson(TokenEvent(index=index, text=text))


def done(tokens: int) -> bytes:
    timings = Timings(queue_ms=0.0, ttft_ms=1.0, total_ms=2.0, tokens_per_s=100.0)
    usage = Usage(prompt_tokens=1, completion_tokens=tokens)
    return to_ndjson(DoneEvent(finish_reason="length", usage=usage, timings=timings))


def good_stream(tokens: int) -> list[bytes]:
    """What a healthy generator answers: `tokens` token lines, then one `done`."""
    return [*(token(i) for i in range(tokens)), done(tokens)]


@dataclass(frozen=True)
class Lines:
    """An HTTP answer with this status and body (the lines as given), then close."""

    lines: list[bytes]
    status: int = 200
    content_type: str = "application/x-ndjson"


@dataclass(frozen=True)
class Raw:
    """These bytes instead of an HTTP answer, then close."""

    data: bytes


@dataclass(frozen=True)
class Silent:
    """Read the request, answer nothing, hold the connection until the gateway drops it."""


@dataclass(frozen=True)
class Trickle:
    """Send the headers and `lines`, then one more line a byte every `interval_s`, never
    finishing it, until the gateway drops the connection."""

    lines: list[bytes] = field(default_factory=list)
    interval_s: float = 0.2


@dataclass(frozen=True)
class Endless:
    """Token after token of `text_bytes` each, as fast as the gateway reads them, until it
    drops the connection."""

    text_bytes: int = 64 * 1024


Script = Lines | Raw | Silent | Trickle | Endless


class _Gone(Exception):
    """The gateway closed the connection (or the stand-in is shutting down)."""


class ScriptedUpstream:
    """`with ScriptedUpstream(scripts) as upstream:` serves on `upstream.url` (a free
    loopback port, or `port`) until the block ends."""

    def __init__(self, scripts: Mapping[str, Script] | None = None, *, port: int = 0) -> None:
        self.scripts = dict(scripts or {})
        self._server = socket.create_server(("127.0.0.1", port))
        self.port: int = self._server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.prompts: list[str] = []  # the prompt of every generation asked for, in order
        self.closed_at: dict[str, float] = {}  # time.monotonic() the gateway hung up
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> ScriptedUpstream:
        self._spawn(self._accept)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        for thread in list(self._threads):
            thread.join(timeout=5)
        self._server.close()

    def wait_closed(self, prompt: str, timeout_s: float) -> float:
        """When the gateway dropped the connection of the request for `prompt`."""
        deadline = time.monotonic() + timeout_s
        while prompt not in self.closed_at:
            assert time.monotonic() < deadline, f"the gateway still holds the {prompt!r} request"
            time.sleep(_POLL_S)
        return self.closed_at[prompt]

    # -- serving ---------------------------------------------------------------------

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        self._server.settimeout(_POLL_S)
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(_Gone, OSError):
            request = self._read_request(conn)
            if request is None:
                return
            method, path, body = request
            conn.setblocking(False)
            if path in ("/healthz", "/readyz"):
                ready = {"status": "ready", "model": "standin", "model_name": "standin"}
                self._answer(conn, 200, "application/json", [json.dumps(ready).encode()])
            elif method == "POST" and path == "/v1/generate":
                self._generate(conn, json.loads(body))
            else:
                self._answer(conn, 404, "application/json", [b'{"error":{"code":"not_found"}}'])

    def _generate(self, conn: socket.socket, body: dict[str, Any]) -> None:
        messages = body.get("messages") or [{}]
        prompt = str(body.get("prompt") or messages[-1].get("content", ""))
        self.prompts.append(prompt)
        script = self.scripts.get(prompt)
        if script is None:
            script = Lines(good_stream(min(int(body.get("max_new_tokens", 3)), 3)))
        if isinstance(script, Lines):
            self._answer(conn, script.status, script.content_type, script.lines)
            return
        if isinstance(script, Raw):
            self._send(conn, script.data)
            return
        try:
            if isinstance(script, Silent):
                while True:
                    self._wait(conn, _POLL_S)
            self._send(conn, self._head(200, "application/x-ndjson"))
            if isinstance(script, Trickle):
                for line in script.lines:
                    self._send(conn, line)
                opening = b'{"type":"token","index":%d,"text":"' % len(script.lines)
                for byte in itertools.chain(opening, itertools.repeat(ord("x"))):
                    self._send(conn, bytes([byte]))
                    self._wait(conn, script.interval_s)
            else:
                for index in itertools.count():
                    self._send(conn, token(index, "x" * script.text_bytes))
        except _Gone:
            if not self._stop.is_set():
                self.closed_at[prompt] = time.monotonic()
            raise

    # -- the wire ------------------------------------------------------------------

    def _read_request(self, conn: socket.socket) -> tuple[str, str, bytes] | None:
        conn.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, body = data.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ", 2)
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            body += chunk
        return method, target.split("?", 1)[0], body

    @staticmethod
    def _head(status: int, content_type: str) -> bytes:
        reason = _REASONS.get(status, "Status")
        return (
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\n"
            "connection: close\r\n\r\n"
        ).encode()

    def _answer(self, conn: socket.socket, status: int, content_type: str, body: list[bytes]):
        self._send(conn, self._head(status, content_type) + b"".join(body))

    def _gone(self, conn: socket.socket) -> bool:
        """The peer closed its side (readable, and nothing to read), or we are stopping."""
        if self._stop.is_set():
            return True
        try:
            return conn.recv(1, socket.MSG_PEEK) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def _wait(self, conn: socket.socket, seconds: float) -> None:
        """Sleep `seconds`, raising `_Gone` as soon as the gateway hangs up."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            readable, _, _ = select.select([conn], [], [], max(0.0, min(left, _POLL_S)))
            if (readable and self._gone(conn)) or self._stop.is_set():
                raise _Gone
            if left <= 0:
                return

    def _send(self, conn: socket.socket, data: bytes) -> None:
        """All of `data`, as fast as the peer takes it; `_Gone` when it hangs up."""
        view = memoryview(data)
        while view:
            readable, writable, _ = select.select([conn], [conn], [], _POLL_S)
            if (readable and self._gone(conn)) or self._stop.is_set():
                raise _Gone
            if writable:
                try:
                    view = view[conn.send(view) :]
                except BlockingIOError:
                    continue
                except OSError:
                    raise _Gone from None
