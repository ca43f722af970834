"""One exclusive advisory file lock, shared by every writer on one machine that must not race another process.

`flock` locks belong to the open file, so the kernel releases them when the holder dies (even under
SIGKILL): a crashed process never leaves a stale lock behind, and the lock file itself can stay.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive(path: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing) for the `with` block; other holders wait."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


__all__ = ["exclusive"]
