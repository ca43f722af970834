"""Give memory freed by a large stage back to the operating system before the next stage grows.

A cycle runs its stages in one process. CPython frees a stage's rows and arrays, but glibc keeps the freed heap
pages for reuse, so the process's resident size stays at the largest stage's peak and the next stage's peak stacks
on top. `malloc_trim` returns those pages; elsewhere (no glibc) this only runs the garbage collector.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import cache


@cache
def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_free_memory() -> bool:
    """Collect garbage and hand free heap pages back; True when glibc's malloc_trim ran."""
    gc.collect()
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
