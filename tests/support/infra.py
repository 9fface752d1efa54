"""Where the deployment lives, and the validators' own venv (`make infra-deps`)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
TEMPLATE = INFRA / "template.yaml"
INFRA_VENV = ROOT / ".venv-infra"


def infra_tool(name: str) -> Path:
    """A program of .venv-infra (cfn-lint, checkov, its python); a clear failure without it."""
    path = INFRA_VENV / "bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: `make infra-deps` installs cfn-lint and checkov")
    return path
