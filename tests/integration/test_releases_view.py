"""The releases view is the registry as it stands: after each approval, rejection, rollback and forget request it
shows the new state, read fresh from the stores, and the Dagster `releases` asset is re-materialized by the run
that made the change."""

from __future__ import annotations

import pytest
from support_forget import file
from support_governance import POLICY, candidate, demo_ws
from support_keys import keyholder

from assets.definitions import defs
from pipelines.deployment.workspace import Workspace
from pipelines.governance.approvals import decide_release
from pipelines.governance.releases_view import releases_markdown, releases_view
from pipelines.governance.rollback import rollback
from pipelines.trust.identity import identity_tags


@pytest.fixture
def ws(demo_copy, monkeypatch) -> Workspace:
    monkeypatch.delenv("MEMGOV_POLICY", raising=False)  # the deployment's adopted policy decides
    return demo_ws(demo_copy)


def _status(ws: Workspace) -> dict[str, str]:
    return {r.release_id: r.status for r in releases_view(ws, POLICY).releases}


def test_the_view_follows_approve_reject_rollback_and_forget(ws):
    first, second = candidate(ws, new_facts=30), candidate(ws, new_facts=12)
    view = releases_view(ws, POLICY)
    assert view.champion == "r0003" and view.pending == [second, first], "newest first, both waiting"
    row = next(r for r in view.releases if r.release_id == first)
    assert row.new_facts == 30 and row.approvals_needed == 1 and row.approvals == []
    md = releases_markdown(view)
    assert "**pending decision**" in md and "| r0003 | **champion** |" in md and "ml-lead, governance" in md

    decide_release(ws, POLICY, first, "approve", "alice", "ml-lead", "card reviewed")
    view = releases_view(ws, POLICY)
    assert view.champion == first and _status(ws)["r0003"] == "retired"
    stale = next(r for r in view.releases if r.release_id == second)
    assert not stale.pending and stale.status.startswith("stale candidate (judged against r0003)"), \
        "a candidate judged against the old champion can no longer be approved, so it is not offered"
    assert view.pending == []

    third = candidate(ws, new_facts=5)
    decide_release(ws, POLICY, third, "reject", "bob", "governance", "not this week")
    assert _status(ws)[third] == "rejected" and releases_view(ws, POLICY).pending == []
    rejected = next(r for r in releases_view(ws, POLICY).releases if r.release_id == third)
    assert rejected.gates == "passed", "a rejected release still shows what its gates said (a person rejected it)"

    rollback(ws, POLICY, "r0003", "bob", "governance", "regression reported")
    view = releases_view(ws, POLICY)
    assert view.champion == "r0003" and _status(ws)[first] == "retired"

    file(ws, "req-view", subject_ids=["person-1"])
    view = releases_view(ws, POLICY)
    req = next(q for q in view.requests if q.request_id == "req-view")
    assert req.state == "received" and req.candidate is None and 70 < req.hours_left <= 72
    assert "| req-view | received |" in releases_markdown(view)


def test_a_decision_run_rematerializes_the_releases_asset(ws):
    from dagster import DagsterInstance

    rid = candidate(ws)
    keyholder(ws.home, "alice", "ml-lead")
    tags = identity_tags(ws.keyring().ui.secret, "alice", "release_decision", "login")
    config = {"ops": {"decide_release": {"config": {"release_id": rid, "decision": "approve", "role": "ml-lead",
                                                    "reason": "card reviewed"}}}}
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("release_decision").execute_in_process(run_config=config, tags=tags,
                                                                             instance=instance)
        assert result.success
        event = instance.get_latest_materialization_event(defs.resolve_assets_def("releases").key)
        meta = event.asset_materialization.metadata
    assert meta["champion"].value == rid and meta["pending"].value == "nothing"
    assert f"| {rid} | **champion** |" in meta["registry"].value
