"""One cycle per deployment across pods (MEMGOV_CYCLE_LOCK=store), on moto's S3 server: two pods with their own
disks share only the bucket. While one pod's run holds the lease (renewed past its lifetime many times over), the
other is refused with the holder named; once the holder is killed with SIGKILL its lease expires, and the next run
takes it and learns which run died."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support_s3 import create_buckets, s3_server, use_endpoint

from pipelines.cycle import lock
from pipelines.deployment.workspace import Workspace

ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 1.5
HOLD = """
import sys, time
from pipelines.cycle import lock
from pipelines.deployment.workspace import Workspace
lock.acquire(Workspace.open(sys.argv[1]), "memgov run", run_id="run-of-pod-a")
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def deployment(monkeypatch):
    with s3_server() as endpoint:
        use_endpoint(monkeypatch, endpoint)
        monkeypatch.setenv("MEMGOV_CYCLE_LOCK", "store")
        monkeypatch.setenv("MEMGOV_CYCLE_LEASE_S", str(LEASE_S))
        monkeypatch.setenv("MEMGOV_STORE", f"s3://{create_buckets(endpoint)}/deploy")
        for var in ("MEMGOV_LOG_MIRROR", "MEMGOV_REQUESTS_URL", "MEMGOV_INBOX"):
            monkeypatch.delenv(var, raising=False)
        yield


def test_a_cycle_on_one_pod_holds_off_the_other_until_it_dies(deployment, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "pod-a")], cwd=ROOT, env=os.environ.copy(),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        pod_b = Workspace.open(tmp_path / "pod-b")
        with pytest.raises(lock.CycleBusy, match=r"another cycle is running on s3://.*\(run run-of-pod-a\) on host "):
            lock.acquire(pod_b, "memgov run", run_id="run-of-pod-b")
        time.sleep(4 * LEASE_S)  # the holder renews: its lease is still live long after it would have expired
        with pytest.raises(lock.CycleBusy, match="run-of-pod-a"):
            lock.acquire(pod_b, "memgov run", run_id="run-of-pod-b")
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()

    started = time.monotonic()
    taken = lock.acquire(pod_b, "memgov run", run_id="run-of-pod-b", wait_s=30)
    waited = time.monotonic() - started
    assert taken.interrupted and taken.interrupted["run_id"] == "run-of-pod-a", "the dead run is named"
    assert waited <= LEASE_S + 2, f"taken once the dead holder's lease expired ({waited:.1f} s)"
    lock.release(pod_b)

    pod_c = Workspace.open(tmp_path / "pod-c")  # a lease given back is free at once, and no run died
    assert lock.acquire(pod_c, "memgov run", run_id="run-of-pod-c").interrupted is None
    lock.release(pod_c)


def test_without_the_setting_pods_do_not_share_a_lease(deployment, tmp_path, monkeypatch):
    monkeypatch.delenv("MEMGOV_CYCLE_LOCK")
    pod_a, pod_b = Workspace.open(tmp_path / "pod-a"), Workspace.open(tmp_path / "pod-b")
    lock.acquire(pod_a, "memgov run", run_id="a")
    try:
        lock.acquire(pod_b, "memgov run", run_id="b")  # one host's lock only: the queue's tag limit serialises
        lock.release(pod_b)
    finally:
        lock.release(pod_a)
    assert pod_a.store.read_text(lock.LEASE_KEY) is None


def test_a_lease_the_store_cannot_take_back_still_frees_the_pod_and_expires(deployment, tmp_path):
    from pipelines.state.store.base import StoreUnavailable

    pod_a = Workspace.open(tmp_path / "pod-a")
    lock.acquire(pod_a, "memgov run", run_id="run-that-ended")

    def unreachable(*_args, **_kwargs):
        raise StoreUnavailable("artifact store is unreachable")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pod_a.store, "compare_and_swap", unreachable)
        lock.release(pod_a)  # logs, does not raise: the run's own outcome is what its caller sees
    again = lock.acquire(pod_a, "memgov run", run_id="next-on-a", wait_s=LEASE_S + 2)  # the pod's lock is free
    assert again.interrupted and again.interrupted["run_id"] == "run-that-ended", "taken once the lease expired"
    lock.release(pod_a)
