"""One cycle at a time per deployment: an OS file lock under the home, taken at admission and held until the run
has ended (released by the process that ran it, or by the OS when that process exits): a run killed after its
release step still leaves its holder record, so it too is marked failed by the next run.

The lock belongs to the process that runs the cycle (the CLI, or the run worker the daemon starts), so it cannot go
stale: when that process dies, even by SIGKILL, the OS releases it. Beside it, `cycle.holder.json` names the run
holding it; a holder file left behind by a dead run tells the next cycle which run was interrupted, so that run
can be marked failed instead of staying 'started' for ever.

Scope: one host. A deployment whose cycles run on several machines (pods) sets MEMGOV_CYCLE_LOCK=store: the run
then also holds a lease in the artifact store (`locks/cycle.json`, moved by compare-and-swap, which S3 does with
conditional writes). A thread renews it while the run lives; a holder that dies stops renewing, and once its lease
has expired (MEMGOV_CYCLE_LEASE_S, 120 s by default, far above any clock skew between hosts) the next run takes it
and marks the dead run failed.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pipelines.deployment.workspace import Workspace

LOCK = Path("locks") / "cycle.lock"
HOLDER = Path("locks") / "cycle.holder.json"
_HELD: dict[Path, int] = {}  # home -> fd of the lock this process holds
_LEFT: dict[Path, dict] = {}  # home -> holder record a dead process left, until a run takes it up
_LEASES: dict[Path, _Lease] = {}  # home -> the deployment-wide lease this process holds (MEMGOV_CYCLE_LOCK=store)
LEASE_KEY = "locks/cycle.json"
log = logging.getLogger(__name__)


class CycleBusy(RuntimeError):
    """Another cycle holds this deployment's lock; the message names it and what to do."""


@dataclass(frozen=True)
class Acquired:
    interrupted: dict | None  # the holder record a dead run left behind, if any


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _busy(where: object, held: dict) -> CycleBusy:
    return CycleBusy(
        f"another cycle is running on {where}: {held.get('holder', 'unknown')}"
        f"{' (run ' + held['run_id'] + ')' if held.get('run_id') else ''}"
        f"{' on host ' + held['host'] if held.get('host') else ''}, pid {held.get('pid', '?')}, "
        f"since {held.get('since', '?')}. One cycle runs at a time: wait for it to finish "
        "(`memgov status`), then run again")


def lease_seconds() -> float:
    return float(os.environ.get("MEMGOV_CYCLE_LEASE_S", "120"))


class _Lease:
    """This process's hold on the deployment-wide lease: the exact text last written (what compare-and-swap
    compares), renewed by a daemon thread every quarter of the lease until released."""

    def __init__(self, store, text: str):
        self.store, self.text = store, text
        self._stop = threading.Event()
        self._guard = threading.Lock()
        self._thread = threading.Thread(target=self._renew, name="memgov-cycle-lease", daemon=True)
        self._thread.start()

    def _swap(self, **changes) -> bool:
        with self._guard:
            record = {**json.loads(self.text), **changes, "expires": time.time() + lease_seconds()}
            new = json.dumps(record, sort_keys=True)
            if not self.store.compare_and_swap(LEASE_KEY, self.text, new):
                return False
            self.text = new
            return True

    def _renew(self) -> None:
        while not self._stop.wait(lease_seconds() / 4):
            try:
                if not self._swap():
                    log.error("the cycle lease in %s was taken by another run; this run no longer holds it", self.store)
                    return
            except Exception as exc:  # noqa: BLE001 - an unreachable store is retried at the next renewal
                log.warning("could not renew the cycle lease: %s", exc)

    def update(self, holder: str, run_id: str | None) -> None:
        if not self._swap(holder=holder, run_id=run_id):
            raise CycleBusy(f"the cycle lease in {self.store.uri} was taken by another run while this one held it "
                            f"(its renewals did not reach the store for {lease_seconds():.0f} s); run again")

    def release(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        with self._guard:
            record = {**json.loads(self.text), "released": _now()}
            self.store.compare_and_swap(LEASE_KEY, self.text, json.dumps(record, sort_keys=True))


def shared_lock() -> bool:
    return os.environ.get("MEMGOV_CYCLE_LOCK", "").strip() == "store"


def _take_lease(ws: Workspace, home: Path, holder: str, run_id: str | None, deadline: float) -> None:
    """The deployment-wide lease taken, waiting until `deadline` for a live one; raises CycleBusy naming it."""
    while True:
        old = ws.store.read_text(LEASE_KEY)
        held = json.loads(old) if old else None
        if held is None or held.get("released") or float(held.get("expires", 0)) < time.time():
            mine = {"holder": holder, "run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
                    "since": _now(), "expires": time.time() + lease_seconds()}
            text = json.dumps(mine, sort_keys=True)
            if ws.store.compare_and_swap(LEASE_KEY, old, text):
                if held and not held.get("released") and held.get("run_id") and held["run_id"] != run_id:
                    _LEFT[home] = held  # its holder stopped renewing: that run died
                _LEASES[home] = _Lease(ws.store, text)
                return
            continue  # another run moved it between our read and our write: look again
        if time.monotonic() >= deadline:
            raise _busy(ws.store.uri, held)
        time.sleep(0.5)


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
        if home in _LEASES:
            _LEASES[home].update(holder, run_id)
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
                raise _busy(home, _holder(home) or {}) from None
            time.sleep(0.5)
    left = _holder(home)  # we hold the lock, so whoever wrote this is gone
    if left and left.get("run_id") and left.get("run_id") != run_id:
        _LEFT[home] = left
    if shared_lock():
        try:
            _take_lease(ws, home, holder, run_id, deadline)
        except BaseException:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            raise
    _HELD[home] = fd
    _write_holder(home, holder, run_id)
    return Acquired(interrupted=_LEFT.pop(home, None) if run_id else None)


def _write_holder(home: Path, holder: str, run_id: str | None) -> None:
    record = {"holder": holder, "run_id": run_id, "pid": os.getpid(), "since": _now()}
    tmp = home / (str(HOLDER) + ".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(home / HOLDER)


def release(ws: Workspace) -> None:
    """Give the lock back (a cycle that reached its outcome); nothing if this process does not hold it."""
    home = ws.home.resolve()
    fd = _HELD.pop(home, None)
    if fd is None:
        return
    lease = _LEASES.pop(home, None)
    if lease is not None:
        try:
            lease.release()
        except Exception as exc:  # noqa: BLE001 - the lease then expires by itself; the local lock still goes
            log.warning("could not give the cycle lease back (it expires within %.0f s): %s", lease_seconds(), exc)
    (home / HOLDER).unlink(missing_ok=True)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
