"""`scripts/local_up.py` itself: it starts the three servers, the page works through
them, and SIGINT leaves no process behind."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from devtools.processes import FUNCTIONS_DIR, SCRIPTS_DIR, free_port

pytestmark = pytest.mark.browser

SCRIPT = SCRIPTS_DIR / "local_up.py"
READY_TIMEOUT_S = 180


class Orchestrator:
    """The script as a user runs it, its output collected line by line."""

    def __init__(self, env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(SCRIPT)],
            env={**os.environ, "PYTHONPATH": str(FUNCTIONS_DIR), **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def wait_for(self, pattern: str, timeout: float = READY_TIMEOUT_S) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.output.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        raise AssertionError(f"no line matching {pattern!r}; output:\n{''.join(self.output)}")

    def drain(self) -> str:
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return "".join(self.output)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def ports() -> dict[str, int]:
    return {
        "GENERATOR_PORT": free_port(),
        "GATEWAY_PORT": free_port(),
        "FRONTEND_PORT": free_port(),
    }


@pytest.fixture
def orchestrator(tiny_model_dir: Path, ports: dict[str, int]) -> Iterator[Orchestrator]:
    env = {name: str(port) for name, port in ports.items()}
    running = Orchestrator({**env, "MODEL": str(tiny_model_dir), "LOG_LEVEL": "warning"})
    yield running
    running.stop()


def child_pids(output: Orchestrator) -> dict[str, int]:
    pids = {}
    for name in ("generator", "gateway"):
        pids[name] = int(output.wait_for(rf"{name} started \(pid (\d+)\)").group(1))
    return pids


def is_gone(pid: int) -> bool:
    """Neither the process nor anything left in its process group exists."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return True
    return False


def port_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_local_up_serves_the_page_and_sigint_stops_everything(
    orchestrator: Orchestrator, ports: dict[str, int], browser: Browser
) -> None:
    pids = child_pids(orchestrator)
    url = orchestrator.wait_for(r"Open (http://\S+) in a browser").group(1)
    assert url == f"http://127.0.0.1:{ports['FRONTEND_PORT']}/"

    index = httpx.get(url, timeout=10)
    assert index.status_code == 200
    assert "<textarea" in index.text
    config = httpx.get(url + "config.js", timeout=10)
    assert config.status_code == 200
    assert config.headers["content-type"].startswith("text/javascript")
    assert f"http://127.0.0.1:{ports['GATEWAY_PORT']}" in config.text

    # The page, on its own origin, streams through the gateway (CORS included).
    page = browser.new_page()
    try:
        page.goto(url)
        page.click("#settings summary")
        page.fill("#max-tokens", "8")
        page.fill("#prompt", "Hello")
        page.click("#start")
        expect(page.locator("#status")).to_have_attribute("data-state", "done", timeout=60_000)
    finally:
        page.close()

    orchestrator.process.send_signal(signal.SIGINT)
    assert orchestrator.process.wait(timeout=60) == 0, orchestrator.drain()
    output = orchestrator.drain()
    assert "all stopped" in output
    for name, pid in pids.items():
        assert is_gone(pid), f"{name} (pid {pid}) survived SIGINT"
    for port in ports.values():
        assert port_closed(port)


def test_a_dying_child_stops_the_rest(orchestrator: Orchestrator) -> None:
    pids = child_pids(orchestrator)
    orchestrator.wait_for(r"Open (http://\S+) in a browser")
    os.killpg(pids["generator"], signal.SIGKILL)
    assert orchestrator.process.wait(timeout=60) == 1
    assert "generator exited" in orchestrator.drain()
    assert is_gone(pids["gateway"])


def test_a_busy_port_is_named(tiny_model_dir: Path, ports: dict[str, int]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", ports["GATEWAY_PORT"]))
        holder.listen()
        env = {name: str(port) for name, port in ports.items()}
        result = subprocess.run(
            [sys.executable, str(SCRIPT)],
            env={**os.environ, **env, "MODEL": str(tiny_model_dir)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert f"port {ports['GATEWAY_PORT']}" in result.stderr
    assert "GATEWAY_PORT=" in result.stderr


def test_the_generator_leaves_the_gateway_a_core(monkeypatch: pytest.MonkeyPatch) -> None:
    import local_up

    monkeypatch.setattr(local_up.os, "cpu_count", lambda: 2)
    assert local_up.generator_threads({}) == "1"
    assert local_up.generator_threads({"TORCH_THREADS": "2"}) == "2"
    monkeypatch.setattr(local_up.os, "cpu_count", lambda: 1)
    assert local_up.generator_threads({}) == "1"
    monkeypatch.setattr(local_up.os, "cpu_count", lambda: 16)
    assert local_up.generator_threads({}) == "15"
