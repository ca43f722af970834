"""The approval job driven through Dagster's GraphQL API against a real `dagster dev`, as an external tool would.

Under the default policy a candidate waits for a human; the `release_decision` job is the only way the UI and API
decide it, and it goes through the same rules as the CLI (governance.decide_release).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError
from support_dagster import (
    APPROVER,
    REQUESTER,
    dagster_dev,
    decision_config,
    failure_messages,
    wait_for_location,
    wait_for_run,
    waiting_candidate,
)

from pipelines.workspace import Workspace
from policies import load_policy

JOB = "release_decision"


@pytest.fixture
def waiting_release(demo_home: Path, demo_copy: Path, tmp_path_factory, monkeypatch) -> str:
    """The demo deployment under the default policy, with an urgent forget request's candidate waiting for approval."""
    monkeypatch.setenv("MEMGOV_POLICY", "default")
    return waiting_candidate(demo_home, demo_copy, tmp_path_factory)


def test_release_decision_through_graphql(demo_copy: Path, waiting_release: str, tmp_path: Path) -> None:
    home, release_id = demo_copy, waiting_release
    ws = Workspace.open(home)
    champion_before = ws.registry.champion()
    assert champion_before not in (None, release_id)
    assert APPROVER != REQUESTER

    with dagster_dev(home, tmp_path) as server:
        location = wait_for_location(server)
        client = DagsterGraphQLClient(server.host, port_number=server.port, timeout=60)

        # A run config without an approver never becomes a run: Dagster's config schema refuses it up front.
        config = decision_config(release_id)
        del config["ops"]["decide_release"]["config"]["approver"]
        with pytest.raises(DagsterGraphQLClientError) as refused:
            client.submit_job_execution(JOB, repository_location_name=location, run_config=config)
        assert refused.value.args[0] == "RunConfigValidationInvalid"
        assert "approver" in str(refused.value.args[1:])

        # A role the policy does not allow: the run fails in the op, with the policy's reason, and nothing changes.
        run_id = client.submit_job_execution(JOB, repository_location_name=location,
                                             run_config=decision_config(release_id, approver="bob", role="intern"))
        assert wait_for_run(client, run_id) == "FAILURE"
        messages = "\n".join(failure_messages(server, run_id))
        assert "role 'intern' may not decide releases" in messages, messages
        ws = Workspace.open(home)
        assert ws.registry.champion() == champion_before
        assert ws.registry.status(release_id) == "candidate"
        assert ws.registry.get(release_id).approvals == []

        # The launcher may not pick the rules: a resources block pointing the job at the demo policy (which
        # auto-approves) is refused by name before anything is decided.
        overridden = {**decision_config(release_id), "resources": {"memgov": {"config": {"policy": "demo"}}}}
        run_id = client.submit_job_execution(JOB, repository_location_name=location, run_config=overridden)
        assert wait_for_run(client, run_id) == "FAILURE"
        messages = "\n".join(failure_messages(server, run_id))
        assert "this launch sets memgov.policy: remove the resources block" in messages, messages
        assert Workspace.open(home).registry.get(release_id).approvals == []

        # An allowed approver: the run succeeds and the champion pointer moves to the candidate.
        run_id = client.submit_job_execution(JOB, repository_location_name=location,
                                             run_config=decision_config(release_id, reason="card reviewed via the API"))
        status = wait_for_run(client, run_id)
        assert status == "SUCCESS", "\n".join(failure_messages(server, run_id)) + "\n" + server.log_tail()

    ws = Workspace.open(home)
    assert ws.registry.champion() == release_id
    assert ws.registry.status(champion_before) in ("retired", "tainted")  # tainted: trained on the forgotten subject
    approvals = ws.registry.get(release_id).approvals
    assert [(a["approver"], a["role"], a["decision"]) for a in approvals] == [(APPROVER, "ml-lead", "approve")]
    events = [e for e in ws.log.events() if e["object"] == release_id]
    approved = [e for e in events if e["action"] == "release.approved"]
    assert len(approved) == 1 and approved[0]["actor"] == APPROVER
    assert approved[0]["reason"] == "card reviewed via the API"
    assert approved[0].get("run_id") == run_id, "the change log should name the Dagster run that approved"
    (recorded,) = [e for e in events if e["action"] == "release.approval_recorded"]
    assert recorded["details"]["policy"] == load_policy("default").label, "the policy applied is on the decision"
    promoted = [e for e in events if e["action"] == "release.promoted"]
    assert promoted and promoted[-1]["actor"] == APPROVER
    assert ws.log.verify().ok
