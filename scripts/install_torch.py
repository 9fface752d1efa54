#!/usr/bin/env python3
"""Install torch into a venv: the CPU build by default, never hanging on an unreachable index.

`make install` runs this before the rest of the requirements. On Linux, PyPI's torch is
the CUDA build (several GB of `nvidia-*` wheels) while the default model runs on a CPU,
so torch comes from the PyTorch CPU index when that index answers. Where it does not (a
machine that reaches only PyPI or a mirror), the default index is used, so a local wheel
directory configured for pip (`find-links`) or a mirror's build is taken instead.

    python scripts/install_torch.py [--index-url URL] [--constraint FILE]

The version is the `torch==` pin of functions/generator/requirements.txt (the one pin the
images use too); torch's own dependencies are held to the lock with `--constraint`.
An installed torch of the pinned version is kept: to switch builds, `make clean` first.
Standard library only: it runs in a venv that has nothing else yet.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "functions" / "generator" / "requirements.txt"
PROBE_TIMEOUT_S = 5.0


def torch_pin(requirements: Path = REQUIREMENTS) -> str:
    """The `torch==X` line of the generator's requirements."""
    for line in requirements.read_text().splitlines():
        if line.strip().startswith("torch=="):
            return line.strip()
    raise SystemExit(f"no torch== pin in {requirements}")


def installed_version() -> str | None:
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def index_answers(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """None when the index serves torch's page; else why not (for the message)."""
    page = url.rstrip("/") + "/torch/"
    try:
        with urllib.request.urlopen(urllib.request.Request(page, method="HEAD"), timeout=timeout_s):
            return None
    except urllib.error.HTTPError as err:
        return f"HTTP {err.code}"
    except (OSError, ValueError) as err:
        return str(getattr(err, "reason", err))


def pip_command(
    pin: str, index_url: str, constraint: Path | None, timeout_s: float = PROBE_TIMEOUT_S
) -> list[str]:
    """The pip command that installs `pin`: from `index_url` when it answers, else from
    pip's default index; says which, and why."""
    command = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check"]
    if constraint:
        command += ["--constraint", str(constraint)]
    if not index_url:
        print(f">> {pin} from pip's default index")
        return [*command, pin]
    why_not = index_answers(index_url, timeout_s)
    if why_not is not None:
        print(
            f">> the PyTorch index {index_url} does not answer ({why_not}):\n"
            f"   {pin} from pip's default index instead. On Linux that is PyPI's CUDA build\n"
            "   (several GB) unless pip is configured with a local wheel or a mirror."
        )
        return [*command, pin]
    print(f">> {pin} from {index_url}")
    # Extra, not instead: torch's dependencies still come from the usual index. The
    # build there (e.g. 2.13.0+cpu) sorts above PyPI's plain 2.13.0, so pip takes it.
    return [*command, "--extra-index-url", index_url, pin]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--index-url",
        default="",
        help="the PyTorch index to take torch from (e.g. https://download.pytorch.org/whl/cpu);"
        " empty: pip's default index (PyPI: the CUDA build on Linux)",
    )
    parser.add_argument("--constraint", type=Path, help="a constraints file (the lock)")
    args = parser.parse_args(argv)

    pin = torch_pin()
    have = installed_version()
    if have is not None and have.split("+", 1)[0] == pin.split("==", 1)[1]:
        print(f">> torch {have} already installed (to switch builds: make clean install)")
        return 0
    return subprocess.call(pip_command(pin, args.index_url, args.constraint))


if __name__ == "__main__":
    sys.exit(main())
