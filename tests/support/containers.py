"""Helpers for tests that build and run the container images with podman."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
# The podman flags mk/images.mk uses on this kind of machine (no systemd, no crun).
ENGINE = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs"]
RUN_FLAGS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096", "--no-healthcheck"]


def engine(*args: str, timeout: float = 300, input: str | None = None) -> str:
    """Run a podman command; its stdout, or a failure that shows its output."""
    result = subprocess.run(
        [*ENGINE, *args], capture_output=True, text=True, timeout=timeout, input=input
    )
    assert result.returncode == 0, (
        f"podman {' '.join(args[:3])}... exited {result.returncode}\n"
        f"{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def make(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """Run a make target of the project (the commands users run)."""
    result = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, f"make {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def inspect(image: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(engine("image", "inspect", image))[0]
    return info


def image_env(image: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in inspect(image)["Config"]["Env"])


def run_python(
    image: str, code: str, *args: str, extra: tuple[str, ...] = (), stdin: str | None = None
) -> str:
    """`python3 -c code args...` in a throwaway container of `image`."""
    return engine(
        "run", "--rm", "-i", *RUN_FLAGS, *extra, "--entrypoint", "python3", image,
        "-c", code, *args, input=stdin, timeout=300,
    )  # fmt: skip


@dataclass
class Stack:
    """What `make docker-up` started from compose.yaml: the generator, the gateway and the
    page, as project `name`."""

    name: str
    generator_url: str
    gateway_url: str
    page_url: str
    started_at: float  # monotonic, just before `make docker-up`
    make_variables: list[str]  # what `make docker-up` was given

    @property
    def network(self) -> str:
        return f"{self.name}_default"  # compose's default network of the project

    @property
    def generator_in_network(self) -> str:
        return "http://generator:8080"  # the service name resolves on that network

    def logs(self) -> str:
        result = subprocess.run(
            ["make", "--no-print-directory", "docker-logs", *self.make_variables],
            cwd=ROOT, capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        return result.stdout + result.stderr


def wait_until_listening(url: str, timeout_s: float = 300) -> None:
    """Until something answers HTTP at `url` (any status)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens at {url} after {timeout_s}s")
