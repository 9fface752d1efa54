"""The gateway must install and run without torch or transformers (its image has neither)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FUNCTIONS = Path(__file__).resolve().parents[2] / "functions"
REQUIREMENTS = FUNCTIONS / "gateway" / "requirements.txt"

PROBE = """
import sys
import gateway.app, gateway.handler
app = gateway.app.create_app()
heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'torch', 'transformers', 'generator',
               'numpy', 'safetensors', 'tokenizers', 'botocore'})
print(','.join(heavy))
"""


def test_importing_the_gateway_loads_no_model_libraries():
    """Nor botocore, while GENERATOR_AUTH is `none` (the default): it only costs cold start."""
    env = {**os.environ, "PYTHONPATH": str(FUNCTIONS), "START_SECRET": "x"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_gateway_requirements_are_pinned_and_torch_free():
    lines = [
        line.strip()
        for line in REQUIREMENTS.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert all("==" in line for line in lines), lines
    names = {line.split("==")[0].lower() for line in lines}
    assert not names & {"torch", "transformers", "safetensors", "tokenizers"}
