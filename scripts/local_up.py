#!/usr/bin/env python3
"""Run the whole service on this machine: generator, gateway and the static page.

`make local-up` calls this after installing and preparing the model. It starts

- the generator (`uvicorn --factory generator.app:create_app`) on GENERATOR_PORT,
- the gateway (`uvicorn --factory gateway.app:create_app`) on GATEWAY_PORT, told where
  the generator is (GENERATOR_URL) and which origin the page has (ALLOWED_ORIGINS),
- the static page server (scripts/page_server.py) on FRONTEND_PORT, in this process.

The page and the gateway listen on different ports, so they are different origins, as
with real static hosting: every request from the page goes through CORS. The page server
answers `/config.js` itself with the URL of the gateway started here, so the committed
`frontend/config.js` (the deployment default) never needs editing.

Each child runs in its own process group (`devtools.processes`), so a signal to the
group reaches every process it may spawn; Ctrl-C (SIGINT) or SIGTERM to this script
stops all of them and waits until they are gone. Standard library only: it runs before
anything else works.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO

from devtools.processes import STOP_GRACE_S, GroupProcess, probe, python_path, uvicorn_argv
from page_server import FRONTEND_DIR, FrontendServer, make_frontend_server

WILDCARD_HOSTS = {"0.0.0.0", "::", ""}


def log(message: str) -> None:
    print(f"[local-up] {message}", flush=True)


# ---- child processes -----------------------------------------------------------------------


class Child(GroupProcess):
    """One uvicorn process, in its own process group, its output prefixed with its name."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        super().__init__(argv, env)
        self.name = name
        self.pump: threading.Thread | None = None

    def start(self) -> None:
        self.spawn(subprocess.PIPE)
        assert self.process is not None
        assert self.process.stdout is not None
        self.pump = threading.Thread(
            target=self._pump, args=(self.process.stdout,), name=f"{self.name}-log", daemon=True
        )
        self.pump.start()
        log(f"{self.name} started (pid {self.pid})")

    def _pump(self, stream: IO[bytes]) -> None:
        prefix = f"[{self.name}] "
        for raw in iter(stream.readline, b""):
            sys.stdout.write(prefix + raw.decode(errors="replace").rstrip("\n") + "\n")
            sys.stdout.flush()

    def stop(self, grace_s: float = STOP_GRACE_S) -> bool:
        graceful = super().stop(grace_s)
        if not graceful:
            log(f"{self.name} ignored SIGTERM for {grace_s:.0f}s; killed it")
        if self.pump is not None:
            self.pump.join(timeout=2)
        return graceful


# ---- settings and readiness -------------------------------------------------------------


@dataclass
class Config:
    host: str
    generator_port: int
    gateway_port: int
    frontend_port: int
    ready_timeout_s: float
    allowed_origins: str
    gateway_public_url: str | None

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Config:
        host = env.get("HOST", "127.0.0.1")
        frontend_port = int(env.get("FRONTEND_PORT", "8080"))
        gateway_port = int(env.get("GATEWAY_PORT", "8000"))
        origins = [f"http://localhost:{frontend_port}", f"http://127.0.0.1:{frontend_port}"]
        if host not in WILDCARD_HOSTS and host not in ("localhost", "127.0.0.1"):
            origins.append(f"http://{_url_host(host)}:{frontend_port}")
        public = env.get("GATEWAY_PUBLIC_URL") or None
        if public is None and host not in WILDCARD_HOSTS:
            public = f"http://{_url_host(host)}:{gateway_port}"
        return cls(
            host=host,
            generator_port=int(env.get("GENERATOR_PORT", "8001")),
            gateway_port=gateway_port,
            frontend_port=frontend_port,
            ready_timeout_s=float(env.get("READY_TIMEOUT_S", "600")),
            allowed_origins=env.get("ALLOWED_ORIGINS") or ",".join(origins),
            gateway_public_url=public,
        )

    @property
    def loopback(self) -> str:
        """Where this script (and the gateway) reach the servers."""
        return "127.0.0.1" if self.host in WILDCARD_HOSTS else _url_host(self.host)

    def url(self, port: int, path: str = "") -> str:
        return f"http://{self.loopback}:{port}{path}"

    def page_url(self) -> str:
        host = "localhost" if self.host in WILDCARD_HOSTS else _url_host(self.host)
        return f"http://{host}:{self.frontend_port}/"


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def port_is_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# ---- the orchestrator ---------------------------------------------------------------------


class Stopped(Exception):
    """A signal asked us to stop, or a child died."""


def generator_threads(env: dict[str, str]) -> str:
    """TORCH_THREADS for a generator sharing this machine with the gateway: as set, else
    every core but one. torch's threads wait for each other at every operation, so when
    the gateway takes a core from one of them the whole step stalls; leaving it a core
    keeps streaming through the gateway as fast as the engine alone (docs/performance.md,
    *Threads*)."""
    return env.get("TORCH_THREADS") or str(max(1, (os.cpu_count() or 1) - 1))


class LocalStack:
    def __init__(self, config: Config, env: dict[str, str]) -> None:
        self.config = config
        self.stop_requested = threading.Event()
        base_env = {**env, "PYTHONPATH": python_path()}
        # Only the gateway (and our readiness polls) call the generator: its access log
        # would be noise next to the gateway's.
        self.generator = Child(
            "generator",
            uvicorn_argv(
                "generator.app:create_app", config.host, config.generator_port, "--no-access-log"
            ),
            {**base_env, "TORCH_THREADS": generator_threads(env)},
        )
        self.gateway = Child(
            "gateway",
            uvicorn_argv("gateway.app:create_app", config.host, config.gateway_port),
            {
                **base_env,
                "GENERATOR_URL": config.url(config.generator_port),
                "ALLOWED_ORIGINS": config.allowed_origins,
            },
        )
        self.children = [self.generator, self.gateway]
        self.frontend: FrontendServer | None = None

    def check_ports(self) -> None:
        for name, port in (
            ("GENERATOR_PORT", self.config.generator_port),
            ("GATEWAY_PORT", self.config.gateway_port),
            ("FRONTEND_PORT", self.config.frontend_port),
        ):
            if not port_is_free(self.config.host, port):
                raise SystemExit(
                    f"[local-up] port {port} on {self.config.host} is in use: stop what holds "
                    f"it or pick another one, e.g. {name}={port + 10} make local-up"
                )

    def ensure_running(self) -> None:
        if self.stop_requested.is_set():
            raise Stopped
        for child in self.children:
            code = child.exit_code()
            if code is not None:
                log(f"{child.name} exited with status {code}; stopping everything")
                raise Stopped

    def wait_ready(self, child: Child, url: str, waiting: str) -> None:
        """Poll `url` until 200, saying every few seconds what we wait for."""
        started = time.monotonic()
        last_note = -10.0
        while True:
            self.ensure_running()
            status, body = probe(url)
            if status == 200:
                log(f"{child.name} ready ({time.monotonic() - started:.1f}s)")
                return
            if body.get("status") == "failed":
                log(f"{child.name} failed to start: {json.dumps(body.get('error', body))}")
                raise Stopped
            elapsed = time.monotonic() - started
            if elapsed > self.config.ready_timeout_s:
                log(f"{child.name} not ready after {elapsed:.0f}s (READY_TIMEOUT_S); giving up")
                raise Stopped
            if elapsed - last_note >= 5:
                log(f"{waiting} ({elapsed:.0f}s)")
                last_note = elapsed
            self.stop_requested.wait(0.25)

    def start_frontend(self) -> None:
        self.frontend = make_frontend_server(
            self.config.host,
            self.config.frontend_port,
            gateway_url=self.config.gateway_public_url,
            gateway_port=self.config.gateway_port,
            log_line=lambda line: print(f"[frontend] {line}", flush=True),
        )
        threading.Thread(target=self.frontend.serve_forever, name="frontend", daemon=True).start()
        log(f"frontend serving {FRONTEND_DIR} on port {self.config.frontend_port}")

    def run(self) -> int:
        self.check_ports()
        started = time.monotonic()
        try:
            self.generator.start()
            self.gateway.start()
            self.start_frontend()
            self.wait_ready(
                self.generator,
                self.config.url(self.config.generator_port, "/readyz"),
                "waiting for generator model load...",
            )
            self.wait_ready(
                self.gateway,
                self.config.url(self.config.gateway_port, "/readyz"),
                "waiting for the gateway...",
            )
            gateway = self.config.gateway_public_url or f"(page host):{self.config.gateway_port}"
            print(
                f"\n[local-up] ready in {time.monotonic() - started:.1f}s\n"
                f"[local-up]   page:      {self.config.page_url()}\n"
                f"[local-up]   gateway:   {gateway}\n"
                f"[local-up]   generator: {self.config.url(self.config.generator_port)}\n"
                f"[local-up] Open {self.config.page_url()} in a browser; Ctrl-C stops all.\n",
                flush=True,
            )
            while True:
                self.ensure_running()
                self.stop_requested.wait(0.5)
        except Stopped:
            return 0 if self.stop_requested.is_set() else 1
        finally:
            self.shutdown()

    def request_stop(self, signum: int, _frame: object) -> None:
        if not self.stop_requested.is_set():
            log(f"{signal.Signals(signum).name} received; stopping...")
        self.stop_requested.set()

    def shutdown(self) -> None:
        # Stop the gateway first so no new work reaches the generator.
        for child in reversed(self.children):
            child.stop()
        if self.frontend is not None:
            self.frontend.shutdown()
            self.frontend.server_close()
        log("all stopped")


def main() -> int:
    config = Config.from_env(dict(os.environ))
    stack = LocalStack(config, dict(os.environ))
    signal.signal(signal.SIGINT, stack.request_stop)
    signal.signal(signal.SIGTERM, stack.request_stop)
    return stack.run()


if __name__ == "__main__":
    sys.exit(main())
