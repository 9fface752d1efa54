"""Fixtures every test package shares: the model directories and generator servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools.processes import ServerProcess
from support.models import build_tiny_gpt2, real_model_dir

pytest_plugins = ["support.browser"]  # the `browser` and `page` fixtures


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random GPT-2 with the SmolLM2 tokenizer (fast; output is byte soup)."""
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2"))


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    """The real default model, converted by `make model`."""
    return real_model_dir()


@pytest.fixture(scope="module")
def tiny_generator(tiny_model_dir: Path) -> Iterator[ServerProcess]:
    """A real generator process (uvicorn) serving the tiny GPT-2 on a free port, one for
    the module (its engine is reused between tests)."""
    with ServerProcess("generator.app:create_app", {"MODEL": str(tiny_model_dir)}) as server:
        yield server
