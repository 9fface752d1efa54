"""Real server processes for the benchmarks (`devtools.processes`, as the tests run them),
and their memory. Importing it makes the functions importable in the benchmark's process."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "functions") not in sys.path:
    sys.path.insert(0, str(ROOT / "functions"))

from devtools.processes import ServerProcess, free_port, python_path  # noqa: E402

__all__ = ["ROOT", "ServerProcess", "free_port", "peak_rss_mb", "python_path"]


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), in MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmHWM for pid {pid}")
