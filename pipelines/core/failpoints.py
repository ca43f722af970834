"""Named points where a crash test kills the process outright (SIGKILL: no `finally`, no handler runs).

`MEMGOV_FAILPOINT=<name>` makes the process kill itself on reaching that point; unset (always, outside tests) a
failpoint is one environment lookup. The points sit between the writes of a multi-step change, so a test can
prove the next start finishes or undoes each half-done change (pipelines/cycle/recovery.py).
"""

from __future__ import annotations

import os
import signal

POINTS = ("release.registered", "champion.swapped", "release.promoted", "release.approved")


def failpoint(name: str) -> None:
    if name not in POINTS:
        raise ValueError(f"unknown failpoint {name!r}; known: {', '.join(POINTS)}")
    if os.environ.get("MEMGOV_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
