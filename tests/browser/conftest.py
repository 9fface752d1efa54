"""A real browser on the page, the page on one origin, the gateway on another.

Chromium is Debian's (`make browser-deps`); Playwright only drives it. The page is
served by the same static server `make local-up` runs (scripts/page_server.py), with a
`config.js` pointing at a gateway process that talks to a real generator process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devtools.metrics import metric
from devtools.processes import ServerProcess, free_port, serving_in_thread
from page_server import make_frontend_server

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"


@contextmanager
def serve_frontend(gateway_url: str, port: int | None = None) -> Iterator[str]:
    """The page on its own port (a different origin from the gateway); yields its URL."""
    port = port or free_port()
    server = make_frontend_server(
        "127.0.0.1", port, gateway_url=gateway_url, gateway_port=0, log_line=lambda _: None
    )
    with serving_in_thread(server):
        yield f"http://127.0.0.1:{port}"


def gateway_process(generator_url: str, page_origin: str, port: int | None = None) -> ServerProcess:
    return ServerProcess(
        "gateway.app:create_app",
        {"GENERATOR_URL": generator_url, "ALLOWED_ORIGINS": page_origin},
        port=port,
    )


class Stack:
    """Generator + gateway + page, with the URLs a test needs."""

    def __init__(self, generator: ServerProcess, gateway: ServerProcess, page_url: str) -> None:
        self.generator = generator
        self.gateway = gateway
        self.page_url = page_url

    def decode_steps(self) -> float:
        """`generator_decode_steps_total`: model forward passes so far."""
        return metric(self.generator.url, "generator_decode_steps_total")


@contextmanager
def stack_for(generator: ServerProcess) -> Iterator[Stack]:
    page_port = free_port()
    origin = f"http://127.0.0.1:{page_port}"
    with (
        gateway_process(generator.url, origin) as gateway,
        serve_frontend(gateway.url, page_port) as page_url,
    ):
        yield Stack(generator, gateway, page_url)


@pytest.fixture(scope="module")
def tiny_stack(tiny_generator: ServerProcess) -> Iterator[Stack]:
    with stack_for(tiny_generator) as stack:
        yield stack
