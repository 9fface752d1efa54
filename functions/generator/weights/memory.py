"""Keeping the process's memory at what it uses: glibc's allocator told to give freed memory back.

Start-up allocates and frees large temporaries (each 4-bit projection is unpacked to
32-bit codes before torch repacks it; tokenizer and weight reads), and glibc keeps freed
heap memory for reuse: measured on the default model, start-up's peak RSS was ~75 MB
above what serving holds, and ~50 MB of it stayed resident after start. So before
loading, blocks of 1 MB and more get mappings of their own (returned to the system
when freed) and the heap is trimmed whenever 1 MB is free at its top; after loading,
everything free is trimmed once. Per-token allocations are far smaller than 1 MB, so
decoding keeps glibc's fast path. Elsewhere than glibc (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_ONE_MB = 1 << 20


@cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if libc is None or not hasattr(libc, "mallopt") or not hasattr(libc, "malloc_trim"):
        return None
    return libc


def return_freed_memory_promptly() -> None:
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, _ONE_MB)
        libc.mallopt(_M_TRIM_THRESHOLD, _ONE_MB)


def release_freed_memory() -> None:
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
