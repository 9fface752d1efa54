"""Fixtures for the container image tests: real builds and real containers, with podman.

No registry is reachable here, so the images are built against local stand-ins for the
Lambda base and adapter images (`make images-standin`; podman keeps the layers, so a
second run only re-copies changed code). The numbers measured along the way (image
sizes, build time, cold start to first token) are written to
test-artifacts/images.json and shown at the end of the run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from devtools.processes import free_port
from support.containers import ROOT, Stack, engine, make

TAG = "test"
IMAGES = {
    "generator": f"localhost/textgen-generator:{TAG}",
    "generator-lambda": f"localhost/textgen-generator:{TAG}-lambda",
    "gateway": f"localhost/textgen-gateway:{TAG}",
    "gateway-lambda": f"localhost/textgen-gateway:{TAG}-lambda",
}
BUILD_TIMEOUT_S = 1200
# Filled by the fixtures and tests; reported at the end of the session.
MEASURED: dict[str, Any] = {}


@pytest.fixture(scope="session")
def measured() -> dict[str, Any]:
    return MEASURED


@pytest.fixture(scope="session")
def built_images() -> dict[str, str]:
    """Both images, both targets, built against the stand-ins (cached layers reused)."""
    started = time.monotonic()
    make("images-standin", f"IMAGE_TAG={TAG}", timeout=BUILD_TIMEOUT_S)
    MEASURED["build_s"] = round(time.monotonic() - started, 1)
    for name, image in IMAGES.items():
        size = int(engine("image", "inspect", "--format", "{{.Size}}", image))
        MEASURED.setdefault("size_mb", {})[name] = round(size / 1e6)
    return IMAGES


@pytest.fixture(scope="module")
def stack(built_images: dict[str, str]) -> Iterator[Stack]:
    """`make docker-up` (compose.yaml through podman-compose) on free ports, not waiting for
    the model to load, so the first request sees the cold start; `make docker-down` after."""
    name = f"textgen-test-{os.getpid()}"  # runs side by side never share containers
    ports = {
        "GENERATOR_PORT": free_port(),
        "GATEWAY_PORT": free_port(),
        "FRONTEND_PORT": free_port(),
    }
    variables = [
        "CONTAINER_ENGINE=podman",
        f"GENERATOR_IMAGE={built_images['generator']}",
        f"GATEWAY_IMAGE={built_images['gateway']}",
        f"COMPOSE_PROJECT_NAME={name}",
        "WAIT_READY=0",
        *(f"{key}={value}" for key, value in ports.items()),
    ]
    env = {"PING_INTERVAL_S": "1"}  # a gateway setting, passed through by compose.yaml
    make("docker-down", *variables, env=env)
    started = time.monotonic()
    stack = Stack(
        name=name,
        generator_url=f"http://127.0.0.1:{ports['GENERATOR_PORT']}",
        gateway_url=f"http://127.0.0.1:{ports['GATEWAY_PORT']}",
        page_url=f"http://127.0.0.1:{ports['FRONTEND_PORT']}",
        started_at=started,
        make_variables=variables,
    )
    try:
        make("docker-up", *variables, env=env, timeout=600)
        yield stack
    finally:
        print(stack.logs())  # shown when a test failed
        make("docker-down", *variables, env=env)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if MEASURED:
        out = ROOT / "test-artifacts" / "images.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(MEASURED, indent=2) + "\n")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if MEASURED:
        terminalreporter.section("container images")
        for key, value in MEASURED.items():
            terminalreporter.write_line(f"{key}: {value}")
