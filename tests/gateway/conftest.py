"""Gateway fixtures: in-process apps over the real generator app, and real processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.app import create_app as create_gateway
from gateway.settings import Settings as GatewaySettings
from generator.app import create_app as create_generator
from generator.metrics import GeneratorMetrics
from generator.serving.engine import Engine
from generator.settings import Settings as GeneratorSettings
from support.gateway import SECRET


@pytest.fixture(scope="module")
def generator_settings(tiny_model_dir) -> GeneratorSettings:
    return GeneratorSettings(model=str(tiny_model_dir), max_new_tokens_limit=512)


@pytest.fixture
def tiny_engine(generator_settings) -> Engine:
    """One engine per test: a worker thread frees its slot on the event loop of the test
    that started it, and each test has its own loop."""
    engine = Engine(generator_settings, GeneratorMetrics())
    engine.load()
    assert engine.ready, engine.load_error
    return engine


class RecordingASGI:
    """Passes requests to the real generator app and remembers their headers, so tests
    can see what the gateway sent upstream."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.headers: list[dict[str, str]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.headers.append({k.decode(): v.decode() for k, v in scope["headers"]})
        await self.app(scope, receive, send)


@pytest.fixture
def upstream(generator_settings, tiny_engine) -> RecordingASGI:
    return RecordingASGI(create_generator(generator_settings, tiny_engine))


GatewayFactory = Callable[..., httpx.AsyncClient]


@pytest.fixture
async def make_gateway(upstream) -> AsyncIterator[GatewayFactory]:
    """Builds an in-process gateway (settings overridable) whose generator calls go to
    `upstream` (or another ASGI app) through `httpx.ASGITransport`."""
    clients: list[httpx.AsyncClient] = []

    def make(app: Any = None, **overrides: Any) -> httpx.AsyncClient:
        settings = GatewaySettings(**{"start_secret": SECRET, "ping_interval_s": 0, **overrides})
        target = httpx.ASGITransport(app=app or upstream)
        gateway = create_gateway(settings, transport=target)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gateway), base_url="http://gateway", timeout=60
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
async def gateway(make_gateway) -> httpx.AsyncClient:
    return make_gateway()


@pytest.fixture
def no_aws_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No credentials anywhere botocore looks, and no instance-metadata lookups."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
