"""The tools behind `make install`, `make docker-up` and `make test`'s prerequisites,
run for real against servers on loopback ports."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import httpx
import pytest

import install_torch
from devtools.processes import SCRIPTS_DIR as SCRIPTS
from devtools.processes import free_port, serving_in_thread


class Answers(http.server.BaseHTTPRequestHandler):
    """Answers every GET and HEAD with the class's status and JSON body."""

    status = 200
    body: ClassVar[dict[str, object]] = {}

    def do_HEAD(self) -> None:
        self.send_response(self.status)
        self.end_headers()

    def do_GET(self) -> None:
        raw = json.dumps(self.body).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def answering(status: int, body: dict[str, object] | None = None) -> Iterator[str]:
    handler = type("Handler", (Answers,), {"status": status, "body": body or {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    with serving_in_thread(server):
        yield f"http://127.0.0.1:{server.server_address[1]}"


@contextmanager
def silent_listener() -> Iterator[str]:
    """A port that accepts connections and never answers: a firewalled or hung index."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


# ---- install_torch.py ----------------------------------------------------------------------


def test_the_torch_pin_is_the_generators() -> None:
    pin = install_torch.torch_pin()
    assert pin.startswith("torch==")
    assert pin in install_torch.REQUIREMENTS.read_text().splitlines()


def test_an_index_that_answers_is_added_for_torch(capsys: pytest.CaptureFixture[str]) -> None:
    with answering(200) as url:
        command = install_torch.pip_command("torch==1.0", url + "/whl/cpu", Path("x.lock"))
    assert command[-3:] == ["--extra-index-url", url + "/whl/cpu", "torch==1.0"]
    assert command[command.index("--constraint") :][:2] == ["--constraint", "x.lock"]
    assert "from http://127.0.0.1" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["refused", "404", "silent"])
def test_an_index_that_does_not_answer_falls_back_at_once(
    case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused, missing, or hanging: pip's default index, within the probe's timeout."""
    started = time.monotonic()
    if case == "refused":
        command = install_torch.pip_command("torch==1.0", f"http://127.0.0.1:{free_port()}", None)
    elif case == "404":
        with answering(404) as url:
            command = install_torch.pip_command("torch==1.0", url, None)
    else:
        with silent_listener() as url:
            command = install_torch.pip_command("torch==1.0", url, None, timeout_s=0.5)
    assert time.monotonic() - started < 30  # a bound on a hang, not a speed measurement
    assert "--extra-index-url" not in command
    assert command[-1] == "torch==1.0"
    out = capsys.readouterr().out
    assert "does not answer" in out
    assert "pip's default index instead" in out


def test_no_index_means_pips_default(capsys: pytest.CaptureFixture[str]) -> None:
    command = install_torch.pip_command("torch==1.0", "", None)
    assert command[-1] == "torch==1.0"
    assert "--extra-index-url" not in command
    assert "default index" in capsys.readouterr().out


# ---- wait_ready.py ---------------------------------------------------------------------------


def run_wait_ready(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPTS / "wait_ready.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_wait_ready_returns_once_every_url_answers() -> None:
    with answering(200) as first, answering(200) as second:
        result = run_wait_ready("--timeout", "10", f"a={first}/x", f"b={second}/y")
    assert result.returncode == 0, result.stdout
    assert ">> a ready" in result.stdout
    assert ">> b ready" in result.stdout


def test_wait_ready_stops_on_a_failed_readiness_report() -> None:
    with answering(503, {"status": "failed", "error": {"code": "model_load_failed"}}) as url:
        result = run_wait_ready("--timeout", "30", f"generator={url}/readyz")
    assert result.returncode == 1
    assert "generator failed" in result.stdout
    assert "model_load_failed" in result.stdout


def test_wait_ready_gives_up_after_its_timeout() -> None:
    result = run_wait_ready("--timeout", "1", f"gateway=http://127.0.0.1:{free_port()}/healthz")
    assert result.returncode == 1
    assert "gateway not ready after" in result.stdout
    assert "no answer" in result.stdout


def test_wait_ready_refuses_a_target_without_a_name() -> None:
    result = run_wait_ready("http://127.0.0.1:1/")
    assert result.returncode == 2
    assert "NAME=URL" in result.stderr


# ---- page_server.py --------------------------------------------------------------------------


@contextmanager
def page(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """page_server.py as a process (how compose.yaml runs it) on a free port."""
    port = free_port()
    frontend = tmp_path / "frontend"
    shutil.copytree(SCRIPTS.parent / "frontend", frontend)
    process = subprocess.Popen(
        [sys.executable, str(SCRIPTS / "page_server.py"), f"--port={port}",
         f"--frontend={frontend}", *args],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(url + "/healthz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield url
    finally:
        process.terminate()  # SIGTERM ends it at once, also as a container's PID 1
        assert process.wait(timeout=10) == 0


def test_the_page_server_serves_the_page_health_and_its_own_config(tmp_path: Path) -> None:
    with page(tmp_path, "--gateway-url=http://gw.example:9000/") as url:
        assert httpx.get(url + "/healthz").text == "ok\n"
        index = httpx.get(url + "/")
        assert index.status_code == 200
        assert "config.js" in index.text
        config = httpx.get(url + "/config.js")
    assert config.headers["content-type"].startswith("text/javascript")
    assert config.headers["cache-control"] == "no-cache"
    assert 'gatewayUrl: "http://gw.example:9000"' in config.text


def test_the_page_server_takes_the_gateway_from_the_environment(tmp_path: Path) -> None:
    env = {"GATEWAY_PORT": "8123", "PATH": "/usr/bin:/bin"}
    with page(tmp_path, env=env) as url:
        config = httpx.get(url + "/config.js").text
    # No public URL: the gateway on the host name the page was opened with.
    assert 'location.hostname + ":8123"' in config


def csp(response: httpx.Response) -> dict[str, list[str]]:
    parts = [part.split() for part in response.headers["content-security-policy"].split(";")]
    return {name: sources for name, *sources in parts if name}


def test_the_page_server_sends_the_security_headers_on_every_answer(tmp_path: Path) -> None:
    """The page, its scripts, its config and a miss alike: the CSP lets the page reach
    the gateway it was pointed at, and nothing else."""
    with page(tmp_path, "--gateway-url=http://gw.example:9000/base") as url:
        answers = [httpx.get(url + path) for path in ("/", "/app.js", "/config.js", "/nope.js")]
    assert [answer.status_code for answer in answers] == [200, 200, 200, 404]
    for answer in answers:
        directives = csp(answer)
        assert directives["connect-src"] == ["'self'", "http://gw.example:9000"]
        assert directives["script-src"] == ["'self'"]
        assert directives["style-src"] == ["'self'"]
        assert directives["frame-ancestors"] == ["'none'"]
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-frame-options"] == "DENY"
    assert answers[1].headers["content-type"].startswith("text/javascript")


def test_the_page_server_csp_follows_the_host_the_page_was_opened_with(tmp_path: Path) -> None:
    """No fixed gateway URL: config.js names this host on GATEWAY_PORT, so does the CSP."""
    env = {"GATEWAY_PORT": "8123", "PATH": "/usr/bin:/bin"}
    with page(tmp_path, env=env) as url:
        port = url.rsplit(":", 1)[1]
        by_ip = httpx.get(url + "/")
        by_name = httpx.get(url + "/", headers={"Host": f"localhost:{port}"})
    assert csp(by_ip)["connect-src"] == ["'self'", "http://127.0.0.1:8123"]
    assert csp(by_name)["connect-src"] == ["'self'", "http://localhost:8123"]


def test_the_page_server_refuses_a_folder_without_a_page(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "page_server.py"), f"--frontend={tmp_path}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert "no index.html" in result.stderr


# ---- system_packages.sh ---------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("dpkg-query") is None, reason="not a Debian/Ubuntu machine")
def test_system_packages_does_nothing_when_everything_is_installed() -> None:
    result = subprocess.run(
        [str(SCRIPTS / "system_packages.sh"), "a test", "coreutils", "bash"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
