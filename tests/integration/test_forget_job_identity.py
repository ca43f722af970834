"""The forget-request job from the UI: the launcher is the sealed signed-in user, never a typed or forged name.
Run in process on a real Dagster instance against a small deployment with real stores."""

from __future__ import annotations

import pytest
from support_forget import HashEmbedder, file, small_deployment, subject
from support_keys import keyholder

from assets.definitions import defs
from pipelines.trust.identity import USER_TAG, VIA_TAG, identity_tags


@pytest.fixture
def ws(tmp_path, monkeypatch):
    ws = small_deployment(tmp_path / "home")
    monkeypatch.setenv("MEMGOV_HOME", str(ws.home))
    monkeypatch.delenv("MEMGOV_POLICY", raising=False)
    monkeypatch.setattr("assets.jobs.shared_embedder", HashEmbedder)  # the deployment's index is hashed words
    file(ws, "req-ui", subject_ids=[subject(4)])
    keyholder(ws.home, "olga", "ml-lead")
    return ws


def _run(request_id: str, tags: dict[str, str], launched_by: str = ""):
    from dagster import DagsterInstance

    config = {"ops": {"process_forget_request": {"config": {"request_id": request_id, "launched_by": launched_by}}}}
    with DagsterInstance.ephemeral() as instance:
        return defs.resolve_job_def("forget_request").execute_in_process(run_config=config, tags=tags, instance=instance, raise_on_error=False)


def _failure(result) -> str:
    return " ".join(e.event_specific_data.error.to_string() for e in result.all_node_events if e.is_failure)


def test_a_forged_identity_tag_is_refused_and_the_request_untouched(ws):
    result = _run("req-ui", {USER_TAG: "olga", VIA_TAG: "login"})
    assert not result.success and "was not set by memgov's UI server" in _failure(result)
    assert ws.requests.get("req-ui").state == "received"


def test_the_sealed_user_is_the_launcher_and_a_claim_for_someone_else_is_refused(ws):
    secret = ws.keyring().ui.secret
    claimed = _run("req-ui", identity_tags(secret, "olga", "forget_request", "login"), launched_by="privacy-office")
    assert not claimed.success and "you are signed in as olga" in _failure(claimed)
    assert ws.requests.get("req-ui").state == "received"
    result = _run("req-ui", identity_tags(secret, "olga", "forget_request", "login"))
    assert result.success
    out = result.output_for_node("process_forget_request")
    assert out["launched_by"] == "olga" and ws.requests.get("req-ui").state != "received"


def test_a_launch_without_identity_is_the_systems_and_cannot_claim_a_person(ws):
    refused = _run("req-ui", {}, launched_by="olga")
    assert not refused.success and "carries no signed-in user" in _failure(refused)
    result = _run("req-ui", {})
    assert result.success and result.output_for_node("process_forget_request")["launched_by"] == "system:launch"


HOLD = """
import sys, time
from pipelines.cycle import lock
from pipelines.deployment.workspace import Workspace
lock.acquire(Workspace.open(sys.argv[1]), "governed_cycle", run_id="run-of-a-cycle")
print("held", flush=True)
sys.stdin.readline()
"""


def test_a_forget_run_waits_for_a_running_cycle_then_reports_it_busy_and_changes_nothing(ws, monkeypatch):
    import subprocess
    import sys
    from pathlib import Path

    monkeypatch.setattr("assets.jobs.FORGET_WAITS_FOR_CYCLE_S", 1.0)
    root = Path(__file__).resolve().parents[2]
    cycle = subprocess.Popen([sys.executable, "-c", HOLD, str(ws.home)], cwd=root, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert cycle.stdout.readline().strip() == "held"
        busy = _run("req-ui", {})
        assert not busy.success and "another cycle is running" in _failure(busy) and "run-of-a-cycle" in _failure(busy)
        assert ws.requests.get("req-ui").state == "received", "nothing was scrubbed beside the running cycle"
    finally:
        cycle.communicate("done\n", timeout=30)
    assert _run("req-ui", {}).success  # the cycle ended: the lock is free
    assert ws.requests.get("req-ui").state != "received"
