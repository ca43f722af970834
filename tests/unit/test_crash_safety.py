"""Crash and concurrency safety of one home: the change log under parallel writers, the one-cycle lock (which a
SIGKILLed holder cannot leave stale), and a home that can be copied without writing into the original."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.cycle import lock
from pipelines.deployment.workspace import Workspace
from pipelines.state.ledger.changelog import ChangeLog

ROOT = Path(__file__).resolve().parents[2]
APPEND = """
import sys
from pipelines.state.ledger.changelog import ChangeLog
log = ChangeLog(sys.argv[1])
for i in range(int(sys.argv[3])):
    log.append(f"writer-{sys.argv[2]}", "test.event", f"{sys.argv[2]}:{i}", reason="concurrency")
"""


def test_writers_in_parallel_processes_keep_one_chain_with_every_event_once(tmp_path):
    path, writers, each = tmp_path / "changelog.jsonl", 4, 40
    procs = [subprocess.Popen([sys.executable, "-c", APPEND, str(path), str(w), str(each)], cwd=ROOT)
             for w in range(writers)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    log = ChangeLog(path)
    result = log.verify()
    assert result.ok and result.n_events == writers * each, result.problem
    objects = [e["object"] for e in log.events()]
    assert sorted(objects) == sorted(f"{w}:{i}" for w in range(writers) for i in range(each))
    assert [e["seq"] for e in log.events()] == list(range(1, writers * each + 1))


HOLD = """
import sys, time
from pipelines.cycle import lock
from pipelines.deployment.workspace import Workspace
lock.acquire(Workspace.open(sys.argv[1]), "governed_cycle", run_id="run-that-dies")
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_cycle_is_refused_naming_the_first_and_a_killed_holder_leaves_no_stale_lock(tmp_path):
    home = tmp_path / "home"
    ws = Workspace.open(home)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(home)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(lock.CycleBusy, match=r"another cycle is running .*run-that-dies.*wait for it"):
            lock.acquire(ws, "memgov run", wait_s=1.0)
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(timeout=30)
        t0 = time.monotonic()
        got = lock.acquire(ws, "memgov run")  # the CLI first, then its run takes up what the dead one left
        again = lock.acquire(ws, "governed_cycle", run_id="run-next")
        assert time.monotonic() - t0 < 5, "a dead holder's lock is free at once"
        assert got.interrupted is None and again.interrupted["run_id"] == "run-that-dies"
        assert again.interrupted["pid"] == holder.pid
    finally:
        holder.kill()
        lock.release(ws)
    assert not (home / lock.HOLDER).exists(), "a cycle that reached its outcome leaves no holder behind"
    assert lock.acquire(ws, "governed_cycle", run_id="run-after").interrupted is None
    lock.release(ws)


def test_a_copied_home_writes_its_runs_into_its_own_instance(tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))  # restored afterwards: ensure_instance_home sets it
    from assets.runner import ensure_instance_home

    original = Workspace.open(tmp_path / "a")
    ensure_instance_home(original)
    shutil.copytree(original.home, tmp_path / "b")
    copy = Workspace.open(tmp_path / "b")
    ensure_instance_home(copy)
    text = (copy.dagster_home / "dagster.yaml").read_text()
    assert str(copy.dagster_home / "storage") in text and str(original.home) not in text
    custom = original.dagster_home / "dagster.yaml"
    custom.write_text("storage:\n  postgres: {}\n")  # an operator's own instance config is never rewritten
    ensure_instance_home(original)
    assert custom.read_text() == "storage:\n  postgres: {}\n"
