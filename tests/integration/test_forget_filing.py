"""Filing a forget request from the UI: the `forget_filing` job files under the sealed signed-in user, with the
CLI's validation, and the UI server's attestation is what lets the scrub run. Forged tags, a different requester,
a replayed run and an attestation copied onto another row are refused. Real Dagster instance, real stores."""

from __future__ import annotations

import threading

import pytest
from support_forget import HashEmbedder, holdings, small_deployment, subject
from support_keys import admin_key, keyholder

from assets.definitions import defs
from pipelines.deployment.workspace import Workspace
from pipelines.forget import process_request
from pipelines.forget.filing import file_request_from_ui, filed_signer
from pipelines.state.requests.models import deadline_after
from pipelines.trust.decisions import SignatureRefused
from pipelines.trust.identity import USER_TAG, VIA_TAG, identity_tags


@pytest.fixture
def ws(tmp_path, monkeypatch):
    ws = small_deployment(tmp_path / "home")
    monkeypatch.setenv("MEMGOV_HOME", str(ws.home))
    monkeypatch.delenv("MEMGOV_POLICY", raising=False)
    monkeypatch.setattr("assets.jobs.shared_embedder", HashEmbedder)
    keyholder(ws.home, "olga", "ml-lead")
    return ws


def _config(request_id: str = "req-ui-1", **fields) -> dict:
    base = {"request_id": request_id, "subject_ids": [subject(4)], "reason": "erasure request from the data subject",
            "legal_basis": "gdpr_art17", "deadline_days": 10.0}
    return {"ops": {"file_forget_request": {"config": {**base, **fields}}}}


def _run(config: dict, tags: dict[str, str]):
    from dagster import DagsterInstance

    with DagsterInstance.ephemeral() as instance:
        return defs.resolve_job_def("forget_filing").execute_in_process(
            run_config=config, tags=tags, instance=instance, raise_on_error=False)


def _failure(result) -> str:
    return " ".join(e.event_specific_data.error.to_string() for e in result.all_node_events if e.is_failure)


def _sealed(ws, user: str = "olga") -> dict[str, str]:
    return identity_tags(ws.keyring().ui.secret, user, "forget_filing", "login")


def test_a_ui_filing_is_the_signed_in_users_and_its_scrub_runs(ws):
    result = _run(_config(), _sealed(ws))
    assert result.success, _failure(result)
    stored = ws.requests.get("req-ui-1")
    assert stored.requester == "olga" and stored.state == "received"
    assert stored.evidence["filed"]["signed"]["via"] == "ui:login"
    (event,) = [e for e in ws.log.events() if e["action"] == "forget.received"]
    assert event["actor"] == "olga" and event["run_id"] == result.run_id
    assert filed_signer(ws, stored).person == "olga"
    assert process_request(ws, "req-ui-1")["state"] == "planned"  # scrubbed; the model forgets next cycle
    assert not holdings(ws, {subject(4)})


def test_bad_fields_are_named_and_nothing_is_filed(ws):
    result = _run(_config(request_id="../etc", subject_ids=[]), _sealed(ws))
    text = _failure(result)
    assert not result.success and "request_id" in text and "selector" in text
    assert ws.requests.list() == []


def test_a_forged_identity_or_another_requester_files_nothing(ws):
    forged = _run(_config(), {USER_TAG: "olga", VIA_TAG: "login"})
    assert not forged.success and "was not set by memgov's UI server" in _failure(forged)
    (failure,) = [e.event_specific_data for e in forged.all_node_events if e.is_failure]
    assert failure.error.cls_name == "Failure" and failure.error.cause is None, "a verdict, not a traceback"
    assert failure.user_failure_data.metadata["verdict"].value == "refused"
    other = _run(_config(requester="privacy-office"), _sealed(ws))
    assert not other.success and "signed in as olga" in _failure(other)
    assert ws.requests.list() == []


def test_one_run_files_one_request(ws):
    fields = {"request_id": "req-a", "selector": {"subject_ids": [subject(4)]}, "reason": "erasure",
              "legal_basis": "gdpr_art17", "deadline": deadline_after(5)}
    file_request_from_ui(ws, dict(fields), "olga", "login", "run-1")
    with pytest.raises(SignatureRefused, match="already filed request req-a"):
        file_request_from_ui(ws, {**fields, "request_id": "req-b"}, "olga", "login", "run-1")
    assert [r.request_id for r in ws.requests.list()] == ["req-a"]

    outcomes = []  # the same run filing twice at once: the claim is one compare-and-swap, so exactly one passes

    def file(request_id: str) -> None:
        try:
            file_request_from_ui(Workspace.open(ws.home), {**fields, "request_id": request_id}, "olga", "login",
                                 "run-2")
            outcomes.append(request_id)
        except SignatureRefused:
            outcomes.append("refused")

    threads = [threading.Thread(target=file, args=(f"req-{n}",)) for n in ("c", "d")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outcomes) == 2 and outcomes.count("refused") == 1, outcomes
    assert len(ws.requests.list()) == 2


def test_an_attestation_copied_onto_another_row_deletes_nothing(ws):
    assert _run(_config(), _sealed(ws)).success
    attested = ws.requests.get("req-ui-1").evidence["filed"]
    # someone with write access to the request database files a wider request and pastes olga's attestation
    fields = {"request_id": "req-wide", "selector": {"subject_ids": [subject(3), subject(4)]}, "reason": "erasure",
              "legal_basis": "gdpr_art17", "deadline": deadline_after(5), "requester": "olga"}
    ws.requests.submit(fields)
    ws.requests.update_evidence("req-wide", lambda _s, e: {**e, "filed": attested})
    out = process_request(ws, "req-wide")
    assert out["state"] == "failed" and "covers other content" in ws.requests.get("req-wide").evidence["failure"]
    assert holdings(ws, {subject(3)}), "the data is untouched"


def test_a_rotated_ui_secret_voids_pending_ui_filings(ws):
    from typer.testing import CliRunner

    from memgov.cli import app

    assert _run(_config(), _sealed(ws)).success
    out = CliRunner().invoke(app, ["keys", "rotate-ui-secret", "--by", admin_key(ws.home), "--reason", "suspected leak",
                                   "--home", str(ws.home)])
    assert out.exit_code == 0, out.output
    with pytest.raises(SignatureRefused, match="rotated"):
        filed_signer(ws, ws.requests.get("req-ui-1"))
    assert process_request(ws, "req-ui-1")["state"] == "failed"
    assert holdings(ws, {subject(4)}), "nothing was deleted on the strength of a voided attestation"
