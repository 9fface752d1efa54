"""Helpers for tests that run the gateway as a real process."""

from __future__ import annotations

from devtools.processes import ServerProcess

ORIGIN = "http://localhost:8080"
SECRET = "test-secret"
API_KEY = "test-api-key"


def gateway_process(generator_url: str, **env: str) -> ServerProcess:
    """A real gateway process (uvicorn) pointed at `generator_url` (ready = /healthz, so
    it starts even when the generator is down)."""
    return ServerProcess(
        "gateway.app:create_app",
        {"GENERATOR_URL": generator_url, "START_SECRET": SECRET, "LOG_LEVEL": "warning", **env},
        ready_path="/healthz",
    )
