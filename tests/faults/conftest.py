"""The fault suite's shared processes, one of each for the whole suite: a real generator
(the tiny GPT-2, one slot, so a second request queues) and a gateway over it; a scripted
stand-in generator (`support.upstreams`: tests add the scripts they need, each under a
prompt of its own) and a gateway over that; and a way to freeze the real generator which
always thaws it again."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devtools.processes import ServerProcess, free_port
from support.faults import fault_gateway
from support.upstreams import ScriptedUpstream


class Generator:
    """The suite's real generator, restartable on the same port (so the gateway, which only
    knows the URL, meets the new process after a crash)."""

    def __init__(self, model_dir: Path) -> None:
        # Status lines every second: well inside the gateway's first-token timeout.
        self.env = {"MODEL": str(model_dir), "MAX_CONCURRENCY": "1", "STATUS_INTERVAL_S": "1"}
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: ServerProcess | None = None

    def start(self) -> None:
        self.server = ServerProcess("generator.app:create_app", self.env, port=self.port)
        self.server.start()

    def signal(self, sig: int) -> None:
        """`sig` to the generator's process group; SIGKILL also reaps it."""
        assert self.server is not None
        if sig == signal.SIGKILL:
            self.server.kill(sig)
        else:
            os.killpg(self.server.pid, sig)

    def stop(self) -> None:
        if self.server is not None and self.server.exit_code() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.server.pid, signal.SIGCONT)
            self.server.stop()


@pytest.fixture(scope="session")
def generator(tiny_model_dir: Path) -> Iterator[Generator]:
    process = Generator(tiny_model_dir)
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="session")
def gateway(generator: Generator) -> Iterator[ServerProcess]:
    """The gateway over the suite's generator, with the suite's small timeouts."""
    with fault_gateway(generator.url) as server:
        yield server


@pytest.fixture
def freeze(generator: Generator) -> Iterator[Callable[[], None]]:
    """`freeze()` stops the generator (SIGSTOP: alive, connections open, silent); the
    test may `generator.signal(SIGCONT)` itself, and it is thawed at the end regardless."""
    yield lambda: generator.signal(signal.SIGSTOP)
    if generator.server is not None and generator.server.exit_code() is None:
        generator.signal(signal.SIGCONT)


@pytest.fixture(scope="session")
def standin() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as upstream:
        yield upstream


@pytest.fixture(scope="session")
def standin_gateway(standin: ScriptedUpstream) -> Iterator[ServerProcess]:
    """A gateway over the stand-in, with the suite's small timeouts."""
    with fault_gateway(standin.url) as server:
        yield server
