"""The approval job driven through Dagster's GraphQL API against a real `memgov ui`, as an external tool would.

Under the default policy a candidate waits for a human; the `release_decision` job is the only way the UI and API
decide it, and it goes through the same rules as the CLI (governance.decide_release). Who decides is the user the
authentication layer saw (here: an oauth2-proxy style header from a trusted address), never a config field.
"""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from dagster_graphql import DagsterGraphQLClient
from support_dagster import (
    APPROVER,
    REQUESTER,
    configure_ui_auth,
    dagster_dev,
    decision_config,
    failure_messages,
    grant_ui_user,
    wait_for_location,
    wait_for_run,
    waiting_candidate,
)

from pipelines.deployment.workspace import Workspace
from policies import load_policy

JOB = "release_decision"


@pytest.fixture
def waiting_release(demo_home: Path, demo_copy: Path, tmp_path_factory, monkeypatch) -> str:
    """The demo deployment under the default policy, with an urgent forget request's candidate waiting for approval."""
    monkeypatch.setenv("MEMGOV_POLICY", "default")
    return waiting_candidate(demo_home, demo_copy, tmp_path_factory)


def _launch(server, location: str, run_config: dict, user: str | None = None, tags: dict | None = None) -> str:
    headers = {"X-Forwarded-User": user} if user else {}
    client = DagsterGraphQLClient(server.host, port_number=server.port, timeout=60, headers=headers)
    return client.submit_job_execution(JOB, repository_location_name=location, run_config=run_config, tags=tags)


LAUNCH = """mutation($executionParams: ExecutionParams!) { launchRun(executionParams: $executionParams) {
  __typename ... on LaunchRunSuccess { run { runId } } } }"""


def _refusal(server, location: str, run_config: dict, user: str | None = None, tags: dict | None = None) -> str:
    """The gate's answer to a launch, read from the raw GraphQL response (the client hides the error text)."""
    params = {"selector": {"repositoryLocationName": location, "repositoryName": "__repository__", "jobName": JOB},
              "runConfigData": run_config,
              "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}}
    body = json.dumps({"query": LAUNCH, "variables": {"executionParams": params}}).encode()
    headers = {"Content-Type": "application/json", **({"X-Forwarded-User": user} if user else {})}
    req = urllib.request.Request(f"{server.url}/graphql", data=body, headers=headers)
    with urllib.request.urlopen(req, timeout=30) as resp:
        answer = json.loads(resp.read().decode())
    result = (answer.get("data") or {}).get("launchRun") or {}
    assert result.get("__typename") == "InvalidSubsetError", f"the launch was not refused: {answer}"
    return result["message"]


def test_release_decision_through_graphql(demo_copy: Path, waiting_release: str, tmp_path: Path) -> None:
    home, release_id = demo_copy, waiting_release
    ws = Workspace.open(home)
    champion_before = ws.registry.champion()
    assert champion_before not in (None, release_id)
    assert APPROVER != REQUESTER
    grant_ui_user(home, APPROVER, "ml-lead")
    grant_ui_user(home, "dave", "data-scientist")
    client = None

    with dagster_dev(home, tmp_path, memgov_ui=True) as server:
        location = wait_for_location(server)
        client = DagsterGraphQLClient(server.host, port_number=server.port, timeout=60)

        # No authentication configured: the approval job is read-only, whoever the header or the config names.
        configure_ui_auth(home)
        said = _refusal(server, location, decision_config(release_id), user=APPROVER)
        assert "governance jobs are read-only" in said, said

        # Authentication on (a trusted proxy at 127.0.0.1): a visitor without the proxy's header changes nothing,
        # and an identity tag the client sets itself does not make it someone.
        configure_ui_auth(home, trusted_proxies=["127.0.0.1"])
        said = _refusal(server, location, decision_config(release_id), tags={"memgov/identity": APPROVER})
        assert "you are not signed in" in said, said

        # The header is believed only from the configured proxy addresses.
        configure_ui_auth(home, trusted_proxies=["10.9.8.7"], local_login=True)
        assert "you are not signed in" in _refusal(server, location, decision_config(release_id), user=APPROVER)
        configure_ui_auth(home, trusted_proxies=["127.0.0.1"])

        # Signed in, but the config names somebody else: refused in the op, nothing recorded.
        run_id = _launch(server, location, decision_config(release_id, approver="mallory"), user=APPROVER)
        assert wait_for_run(client, run_id) == "FAILURE"
        messages = "\n".join(failure_messages(server, run_id))
        assert f"config approver is 'mallory' but you are signed in as {APPROVER}" in messages, messages

        # A role the keyring does not grant the signed-in user.
        run_id = _launch(server, location, decision_config(release_id, role="ml-lead"), user="dave")
        assert wait_for_run(client, run_id) == "FAILURE"
        messages = "\n".join(failure_messages(server, run_id))
        assert "role 'ml-lead' is not granted to dave" in messages, messages
        assert Workspace.open(home).registry.get(release_id).approvals == []

        # The launcher may not pick the rules: a resources block pointing the job at the demo policy (which
        # auto-approves) is refused by name before anything is decided.
        overridden = {**decision_config(release_id), "resources": {"memgov": {"config": {"policy": "demo"}}}}
        run_id = _launch(server, location, overridden, user=APPROVER)
        assert wait_for_run(client, run_id) == "FAILURE"
        messages = "\n".join(failure_messages(server, run_id))
        assert "this launch sets memgov.policy: remove the resources block" in messages, messages
        assert Workspace.open(home).registry.get(release_id).approvals == []

        # The signed-in approver, with a forged identity tag beside: the server's tag wins, the champion moves.
        run_id = _launch(server, location, decision_config(release_id, reason="card reviewed via the API"),
                         user=APPROVER, tags={"memgov/identity": "mallory"})
        status = wait_for_run(client, run_id)
        assert status == "SUCCESS", "\n".join(failure_messages(server, run_id)) + "\n" + server.log_tail()

        # A pod gets SIGTERM, then a kill: with a browser's websocket still open (which a graceful shutdown would
        # wait on for ever), the UI, its code server and its daemon all stop within seconds.
        from websockets.sync.client import connect

        with connect(f"ws://{server.host}:{server.port}/graphql", subprotocols=["graphql-ws"]):
            started = time.monotonic()
            os.kill(server.proc.pid, signal.SIGTERM)
            server.proc.wait(timeout=60)
            stopped_in = time.monotonic() - started
        assert stopped_in < 15, f"memgov ui took {stopped_in:.1f} s to stop after SIGTERM"

    ws = Workspace.open(home)
    assert ws.registry.champion() == release_id
    assert ws.registry.status(champion_before) in ("retired", "tainted")  # tainted: trained on the forgotten subject
    approvals = ws.registry.get(release_id).approvals
    assert [(a["approver"], a["role"], a["decision"]) for a in approvals] == [(APPROVER, "ml-lead", "approve")]
    assert approvals[0]["signed"] == {"via": "ui:proxy", "user": APPROVER, "run_id": run_id}
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
