"""One cycle at a time per deployment: an OS file lock under the home, held from admission to the release.

The lock belongs to the process that runs the cycle (the CLI, or the run worker the daemon starts), so it cannot go
stale: when that process dies, even by SIGKILL, the OS releases it. Beside it, `cycle.holder.json` names the run
holding it; a holder file left behind by a dead run tells the next cycle which run was interrupted, so that run
can be marked failed instead of staying 'started' for ever.

Scope: one host (a local home or a shared POSIX volume). A deployment whose cycles run on several machines needs a
lock in its shared database instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.workspace import Workspace

LOCK = Path("locks") / "cycle.lock"
HOLDER = Path("locks") / "cycle.holder.json"
_HELD: dict[Path, int] = {}  # home -> fd of the lock this process holds
_LEFT: dict[Path, dict] = {}  # home -> holder record a dead process left, until a run takes it up


class CycleBusy(RuntimeError):
    """Another cycle holds this deployment's lock; the message names it and what to do."""


@dataclass(frozen=True)
class Acquired:
    interrupted: dict | None  # the holder record a dead run left behind, if any


def _holder(home: Path) -> dict | None:
    try:
        return json.loads((home / HOLDER).read_text())
    except (OSError, ValueError):
        return None


def acquire(ws: Workspace, holder: str, run_id: str | None = None, wait_s: float = 0.0) -> Acquired:
    """Take the cycle lock for `holder` (re-entrant within this process: sequential in-process runs share it).

    Waits up to `wait_s` seconds for a running cycle to end, then raises CycleBusy naming it."""
    home = ws.home.resolve()
    if home in _HELD:
        _write_holder(home, holder, run_id)
        return Acquired(interrupted=_LEFT.pop(home, None) if run_id else None)
    path = home / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                held = _holder(home) or {}
                raise CycleBusy(
                    f"another cycle is running on {home}: {held.get('holder', 'unknown')}"
                    f"{' (run ' + held['run_id'] + ')' if held.get('run_id') else ''}, pid {held.get('pid', '?')}, "
                    f"since {held.get('since', '?')}. One cycle runs at a time: wait for it to finish "
                    "(`memgov status`), then run again") from None
            time.sleep(0.5)
    left = _holder(home)  # we hold the lock, so whoever wrote this is gone
    if left and left.get("run_id") and left.get("run_id") != run_id:
        _LEFT[home] = left
    _HELD[home] = fd
    _write_holder(home, holder, run_id)
    return Acquired(interrupted=_LEFT.pop(home, None) if run_id else None)


def _write_holder(home: Path, holder: str, run_id: str | None) -> None:
    record = {"holder": holder, "run_id": run_id, "pid": os.getpid(),
              "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    tmp = home / (str(HOLDER) + ".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(home / HOLDER)


def release(ws: Workspace) -> None:
    """Give the lock back (a cycle that reached its outcome); nothing if this process does not hold it."""
    home = ws.home.resolve()
    fd = _HELD.pop(home, None)
    if fd is None:
        return
    (home / HOLDER).unlink(missing_ok=True)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
