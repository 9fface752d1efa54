"""In-process generator apps over the tiny GPT-2 (one loaded engine per module)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from generator.app import create_app
from generator.metrics import GeneratorMetrics
from generator.serving.engine import Engine
from generator.settings import Settings


@pytest.fixture(scope="module")
def tiny_settings(tiny_model_dir) -> Settings:
    return Settings(model=str(tiny_model_dir), max_new_tokens_limit=512)


@pytest.fixture(scope="module")
def tiny_engine(tiny_settings) -> Engine:
    engine = Engine(tiny_settings, GeneratorMetrics())
    engine.load()
    assert engine.ready, engine.load_error
    return engine


@pytest.fixture
async def client(tiny_settings, tiny_engine) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(tiny_settings, tiny_engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://generator") as http:
        yield http
