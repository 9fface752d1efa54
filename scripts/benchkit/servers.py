"""Real server processes for the benchmarks (the tests' `ServerProcess`), and their memory."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
for path in (ROOT / "tests", ROOT / "functions"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from support.servers import ServerProcess, free_port  # noqa: E402

__all__ = ["ROOT", "ServerProcess", "free_port", "peak_rss_mb"]


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmHWM for pid {pid}")
