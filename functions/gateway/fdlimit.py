"""Open-file headroom for many concurrent streams.

Every relayed stream holds two sockets in the gateway process: the client's connection
and the one to the generator. Many shells and service managers start processes with a
soft limit of 1024 open files (the hard limit is usually far higher), so an unraised
gateway runs out of descriptors at roughly 500 concurrent streams: new upstream
connections then fail and those clients get `upstream_unavailable` error events. The
soft limit is the process's own to raise up to the hard limit, so the gateway does that
once at start; beyond the hard limit only the operator can help (`ulimit -Hn`, the
container runtime's `--ulimit nofile=`).
"""

from __future__ import annotations

import contextlib
import logging
import resource

log = logging.getLogger("gateway.fdlimit")

# Descriptors the process needs besides stream sockets (listening socket, logs, imports).
_RESERVED = 64


def raise_open_files_limit() -> tuple[int, int]:
    """Lift the soft RLIMIT_NOFILE to the hard limit; returns (before, after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    unlimited = resource.RLIM_INFINITY
    # Linux refuses an unlimited soft limit on open files (fs.nr_open caps it): under an
    # unlimited hard limit, ask for a generous finite one.
    target = hard if hard != unlimited else 1 << 20
    if soft != unlimited and soft < target:
        with contextlib.suppress(ValueError, OSError):  # a sandbox may refuse: keep the limit
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def stream_capacity(open_files: int) -> int:
    """About how many streams `open_files` descriptors allow at once (two sockets each)."""
    return max(0, (open_files - _RESERVED) // 2)


def ensure_open_files_headroom() -> int:
    """Raise the limit and say what it allows; returns the limit now in force."""
    before, after = raise_open_files_limit()
    log.info(
        "open files limit",
        extra={
            "fields": {
                "open_files_before": before,
                "open_files": after,
                "approx_max_streams": stream_capacity(after),
            }
        },
    )
    return after
