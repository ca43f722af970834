"""Freed memory goes back to the operating system between stages (glibc keeps it otherwise)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipelines.core.memory import _libc

SCRIPT = """
import re
from pathlib import Path
from pipelines.core.memory import release_free_memory

def rss_mib():
    return int(re.search(r"VmRSS:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1)) // 1024

base = rss_mib()
rows = [{"id": i, "text": "x" * 900 + str(i)} for i in range(200_000)]  # about 200 MiB of small objects
grown = rss_mib()
keep = rows[::1000]  # a few survivors scattered through the heap, as a stage's results are
del rows
freed = rss_mib()
release_free_memory()
print(base, grown, freed, rss_mib(), len(keep))
"""


@pytest.mark.skipif(_libc() is None or not sys.platform.startswith("linux"), reason="needs glibc's malloc_trim")
def test_memory_a_stage_freed_is_returned_after_it():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True).stdout
    base, grown, freed, trimmed, _ = map(int, out.split())
    assert grown - base > 150, out
    assert trimmed - base < (grown - base) / 3, f"after the trim {trimmed - base} MiB of {grown - base} remain"
