"""Fixtures for the Mangum handlers, driven in-process with real Lambda event payloads.

Each handler module builds its app from environment settings at import time, as Lambda
does during its init phase, so the fixtures import it afresh with the environment set.
Mangum runs every invocation on one event loop with `run_until_complete`, like a Lambda
execution environment: the tests are plain (sync) functions sharing a loop per module.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from devtools.processes import ServerProcess
from support.lambda_events import (
    Invoke,
    LambdaContext,
    LambdaResponse,
    decode_response,
    lambda_event,
)


def import_handler(module_name: str, env: dict[str, str]) -> Iterator[ModuleType]:
    """Import `module_name` with `env` set and a fresh event loop current; undo both after."""
    loop = asyncio.new_event_loop()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        asyncio.set_event_loop(loop)
        sys.modules.pop(module_name, None)
        try:
            module = importlib.import_module(module_name)
            module.__dict__["_test_loop"] = loop
            yield module
        finally:
            sys.modules.pop(module_name, None)
            # Background tasks left on the loop (sse-starlette's shutdown watcher) end
            # with it, as when a Lambda environment is frozen for good.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            asyncio.set_event_loop(None)
            loop.close()


def make_invoke(module: ModuleType) -> Invoke:
    def invoke(source: str, method: str, path: str, **request: Any) -> LambdaResponse:
        # Other test modules may have replaced the current loop in between.
        asyncio.set_event_loop(module.__dict__["_test_loop"])
        event = lambda_event(source, method, path, **request)
        return decode_response(module.handler(event, LambdaContext()))

    return invoke


@pytest.fixture(scope="module")
def generator_handler(tiny_model_dir: Path) -> Iterator[Invoke]:
    """`generator.handler` serving the tiny GPT-2; call it as invoke(source, method, path, ...)."""
    for module in import_handler("generator.handler", {"MODEL": str(tiny_model_dir)}):
        yield make_invoke(module)


@pytest.fixture(scope="module")
def module_generator_server(tiny_model_dir: Path) -> Iterator[ServerProcess]:
    """A real generator process for the gateway handler to call (one per module)."""
    with ServerProcess("generator.app:create_app", {"MODEL": str(tiny_model_dir)}) as server:
        yield server


START_SECRET = "lambda-test-secret"


@pytest.fixture(scope="module")
def gateway_handler(module_generator_server: ServerProcess) -> Iterator[Invoke]:
    """`gateway.handler` pointed at a real generator process over HTTP."""
    env = {
        "GENERATOR_URL": module_generator_server.url,
        "START_SECRET": START_SECRET,
        "PING_INTERVAL_S": "0",
        "LOG_LEVEL": "warning",
    }
    for module in import_handler("gateway.handler", env):
        yield make_invoke(module)
