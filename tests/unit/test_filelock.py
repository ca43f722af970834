"""Cache entries are trained once however many processes ask at once, and a killed holder never blocks the next."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

HOLDER = """
import sys, time
from pipelines.core.filelock import exclusive
with exclusive(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""

# Each process waits at a barrier until all have started, then asks for the same base model; training is wrapped
# to record each time it runs and to take long enough that unguarded callers would all be inside it together.
ASKER = """
import sys, time
from pathlib import Path
import memgov.demo.model as m

cache, log, me, n = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
original = m.train_base_model

def counted(cfg, progress=True):
    with open(log, "a") as fh:
        fh.write(me + "\\n")
    time.sleep(1.5)
    return original(cfg, progress)

m.train_base_model = counted
(cache.parent / f"ready-{me}").touch()
while len(list(cache.parent.glob("ready-*"))) < n:
    time.sleep(0.05)
cfg = m.BaseModelConfig(n_subjects=4, n_layer=1, n_embd=16, n_head=2, max_epochs=1, general_text=False)
print(m.ensure_base_model(cache, cfg, progress=False), flush=True)
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_processes_asking_at_once_for_one_base_model_train_it_once(tmp_path):
    cache, log, n = tmp_path / "models", tmp_path / "trained.log", 3
    procs = [subprocess.Popen([sys.executable, "-c", ASKER, str(cache), str(log), str(i), str(n)], env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    folders = {out.strip() for out, _ in outs}
    assert len(folders) == 1, folders
    assert len(log.read_text().split()) == 1, "the model was trained by more than one process"
    assert (Path(folders.pop()) / "training_report.json").is_file()
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")], "a temporary folder was left behind"


def test_a_holder_killed_with_sigkill_leaves_no_stale_lock(tmp_path):
    lock = tmp_path / "x.lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock)], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with open(lock, "a+") as fh:
            with pytest.raises(BlockingIOError):  # held by the other process
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=30)
            deadline = time.monotonic() + 10
            while True:
                try:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    assert time.monotonic() < deadline, "the lock stayed held after its holder was killed"
                    time.sleep(0.05)
    finally:
        holder.kill()
