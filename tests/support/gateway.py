"""Helpers for tests that run the gateway as a real process."""

from __future__ import annotations

from devtools.processes import ServerProcess

ORIGIN = "http://localhost:8080"
SECRET = "test-secret"
API_KEY = "test-api-key"


def gateway_process(generator_url: str, *, log_level: str = "warning", **env: str) -> ServerProcess:
    """A real gateway process (uvicorn) pointed at `generator_url` (ready = /healthz, so
    it starts even when the generator is down), logging at `log_level` (app and uvicorn)."""
    return ServerProcess(
        "gateway.app:create_app",
        {"GENERATOR_URL": generator_url, "START_SECRET": SECRET, "LOG_LEVEL": log_level, **env},
        ready_path="/healthz",
        log_level=log_level,
    )
