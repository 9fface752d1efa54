"""Infra fixtures: the validators' venv and the template as CloudFormation reads it."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from support.infra import TEMPLATE, infra_tool

# The template's own YAML (short-form tags such as !Ref, !GetAtt) decoded by cfn-lint,
# the parser the validators use, into plain JSON.
_DECODE = """
import json, sys
from cfnlint.decode import decode
template, matches = decode(sys.argv[1])
if matches:
    sys.exit("\\n".join(str(m) for m in matches))
print(json.dumps(template))
"""


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    result = subprocess.run(
        [str(infra_tool("python")), "-c", _DECODE, str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    decoded: dict[str, Any] = json.loads(result.stdout)
    return decoded
