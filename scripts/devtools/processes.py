"""Real processes on loopback ports: what `make local-up`, the benchmark and the tests run.

`GroupProcess` starts a command in a process group of its own, so a signal to the group
reaches every process it may spawn, and stops it the one way everything here stops
processes: SIGTERM to the group, a grace period, then SIGKILL to whatever is left (which
also reaps a grandchild still in the group after the leader exited).

`ServerProcess` is a `uvicorn --factory <app factory>` on a free loopback port that
waits until a readiness path answers 200, with its output in a log file a failing test
can show.

Standard library only: `make local-up` runs it before anything else works.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from socketserver import BaseServer
from types import TracebackType
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[2]
FUNCTIONS_DIR = ROOT / "functions"
SCRIPTS_DIR = ROOT / "scripts"
STOP_GRACE_S = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serving_in_thread(server: BaseServer) -> Iterator[None]:
    """Serve a standard-library server on a daemon thread for the duration of the block."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class GroupProcess:
    """A command in its own process group (its own session)."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> None:
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self, output: IO[bytes] | int) -> None:
        """Start it, its stdout and stderr going to `output` (a file or `subprocess.PIPE`)."""
        self.process = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg reaches everything
        )

    @property
    def pid(self) -> int:
        assert self.process is not None, "not launched"
        return self.process.pid

    def exit_code(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole group at once (SIGKILL simulates a crash) and reap the leader."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)

    def stop(self, grace_s: float = STOP_GRACE_S) -> bool:
        """SIGTERM the group, wait up to `grace_s`, then SIGKILL what is left of it.
        False when it had to be killed."""
        if self.process is None:
            return True
        graceful = True
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                graceful = False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        return graceful


def python_path() -> str:
    """The functions and the development tools, for processes started from here."""
    return os.pathsep.join([str(FUNCTIONS_DIR), str(SCRIPTS_DIR)])


def uvicorn_argv(factory: str, host: str, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "--factory", factory,
            "--host", host, "--port", str(port), *extra]  # fmt: skip


class ServerProcess(GroupProcess):
    """`uvicorn --factory <factory>` on a free loopback port, ready once `ready_path`
    answers 200; a context manager that stops it (the whole group) on exit."""

    def __init__(
        self,
        factory: str,
        env: dict[str, str] | None = None,
        *,
        port: int | None = None,
        ready_path: str = "/readyz",
        ready_timeout_s: float = 120.0,
        log_level: str = "warning",
    ) -> None:
        """`log_level` is uvicorn's (its own lines); the app's is its LOG_LEVEL setting."""
        self.factory = factory
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_path = ready_path
        self.ready_timeout_s = ready_timeout_s
        self.log_path = Path(tempfile.mkstemp(prefix="server-", suffix=".log")[1])
        argv = uvicorn_argv(factory, "127.0.0.1", self.port, "--log-level", log_level)
        super().__init__(argv, {**os.environ, "PYTHONPATH": python_path(), **(env or {})})

    def start(self) -> ServerProcess:
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> None:
        """Start the process without waiting for it (cold-start measurements time that)."""
        with self.log_path.open("wb") as log:
            self.spawn(log)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.exit_code() is not None:
                raise RuntimeError(f"{self.factory} exited early:\n{self.logs()}")
            if probe(self.url + self.ready_path)[0] == 200:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.factory} not ready in {self.ready_timeout_s}s:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def probe(url: str) -> tuple[int, dict[str, Any]]:
    """GET a readiness URL → (status, JSON body or {}); (0, {}) when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, _json(response.read())
    except urllib.error.HTTPError as err:
        return err.code, _json(err.read())
    except (OSError, ValueError):
        return 0, {}


def _json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
