"""The UI's authentication layer on its own: whose header is believed, sealed sessions and run tags, and what
mutations pass the gate (the server-level behaviour is in the GraphQL and browser tests)."""

from __future__ import annotations

import time

import pytest

from memgov.webauth import COOKIE, Refusal, admit_graphql, identify, session_cookie
from pipelines.trust.identity import SEAL_TAG, USER_TAG, IdentityRefused, identity_tags, ui_user
from pipelines.trust.keyring import Keyring, Person, UiAuth

LAUNCH = ("mutation L($executionParams: ExecutionParams!) { launchRun(executionParams: $executionParams) "
          "{ __typename } }")


def ring(**ui) -> Keyring:
    return Keyring(ui=UiAuth(secret="s3cret", **ui), people={"alice": Person(roles=["ml-lead"])})


def scope(client: str = "127.0.0.1", **headers: str) -> dict:
    return {"client": (client, 5000), "headers": [(k.replace("_", "-").encode(), v.encode()) for k, v in headers.items()]}


def launch(job: str = "release_decision", tags: list | None = None) -> dict:
    params = {"selector": {"jobName": job}, "executionMetadata": {"tags": tags or []}}
    return {"query": LAUNCH, "variables": {"executionParams": params}}


def test_a_proxy_header_counts_only_from_a_trusted_address():
    keyring = ring(trusted_proxies=["10.0.0.5"])
    assert identify(keyring, scope("10.0.0.5", x_forwarded_user="alice")) == ("alice", "proxy")
    assert identify(keyring, scope("127.0.0.1", x_forwarded_user="alice")) is None


def test_a_session_cookie_counts_only_when_sealed_and_fresh():
    keyring = ring(local_login=True)
    good = session_cookie("s3cret", "alice")
    assert identify(keyring, scope(cookie=f"{COOKIE}={good}")) == ("alice", "login")
    forged = session_cookie("another secret", "alice")
    assert identify(keyring, scope(cookie=f"{COOKIE}={forged}")) is None
    stale = session_cookie("s3cret", "alice", now=time.time() - 9 * 3600)
    assert identify(keyring, scope(cookie=f"{COOKIE}={stale}")) is None


def test_without_authentication_governance_launches_are_read_only_and_others_pass():
    with pytest.raises(Refusal, match="governance jobs are read-only"):
        admit_graphql(ring(), launch("release_decision"), None)
    assert admit_graphql(ring(), launch("governed_cycle"), None)


def test_with_authentication_a_visitor_changes_nothing():
    with pytest.raises(Refusal, match="not signed in"):
        admit_graphql(ring(local_login=True), launch("governed_cycle"), None)


def test_a_launch_is_stamped_with_the_signed_in_user_and_client_identity_tags_are_dropped():
    forged = [{"key": USER_TAG, "value": "mallory"}, {"key": SEAL_TAG, "value": "1:abc"}, {"key": "team", "value": "x"}]
    out = admit_graphql(ring(local_login=True), launch(tags=forged), ("alice", "login"))
    tags = {t["key"]: t["value"] for t in out["variables"]["executionParams"]["executionMetadata"]["tags"]}
    assert tags[USER_TAG] == "alice" and tags["team"] == "x"
    assert ui_user(ring(), tags, "release_decision").name == "alice"


def test_re_execution_and_inline_parameters_are_refused():
    reexec = {"query": "mutation { launchRunReexecution(reexecutionParams: {parentRunId: \"x\", strategy: ALL_STEPS})"
                       " { __typename } }"}
    with pytest.raises(Refusal, match="re-execution is disabled") as refused:
        admit_graphql(ring(local_login=True), reexec, ("alice", "login"))
    answer = refused.value.answer()["data"]["launchRunReexecution"]
    assert answer["__typename"] == "InvalidSubsetError" and "re-execution is disabled" in answer["message"]
    inline = {"query": "mutation { launchRun(executionParams: {selector: {jobName: \"rollback\"}}) { __typename } }"}
    with pytest.raises(Refusal, match="as a GraphQL variable"):
        admit_graphql(ring(), inline, None)


def test_a_run_tag_not_sealed_by_the_server_is_refused():
    tags = identity_tags("another secret", "alice", "release_decision", "proxy")
    with pytest.raises(IdentityRefused, match="not set by memgov's UI server"):
        ui_user(ring(), tags, "release_decision")
    moved = identity_tags("s3cret", "alice", "rollback", "proxy")  # sealed for another job
    with pytest.raises(IdentityRefused, match="not set by memgov's UI server"):
        ui_user(ring(), moved, "release_decision")
    with pytest.raises(IdentityRefused, match="no signed-in user"):
        ui_user(ring(), {}, "release_decision")
    stranger = identity_tags("s3cret", "zed", "release_decision", "proxy")
    with pytest.raises(IdentityRefused, match="not in the deployment's keyring"):
        ui_user(ring(), stranger, "release_decision")


@pytest.mark.parametrize("config", [
    {"ops": {"decide_release": {"config": {"release_id": "r0005", "role": "ml-lead", "reason": "  "}}}},
    {"ops": {"rollback_release": {"config": {"to_release": "r0003", "role": "ml-lead"}}}},
    "ops:\n  decide_release:\n    config:\n      release_id: r0005\n      role: ml-lead\n      reason: ''\n",
])
def test_a_governance_launch_without_a_reason_is_refused_before_it_runs(config):
    payload = launch()
    payload["variables"]["executionParams"]["runConfigData"] = config
    with pytest.raises(Refusal, match=r"config.reason is empty: say why"):
        admit_graphql(ring(local_login=True), payload, ("alice", "login"))
    fine = launch()
    fine["variables"]["executionParams"]["runConfigData"] = {"ops": {"decide_release": {"config": {"reason": "ok"}}}}
    assert admit_graphql(ring(local_login=True), fine, ("alice", "login"))
