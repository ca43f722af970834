"""The approver's decision form: it offers only pending candidates and the deciding roles the person holds, and a
submission that names anything else, or has no reason, is refused by field before anything is launched."""

from __future__ import annotations

import pytest

from memgov.decide_page import FormRefused, launch_outcome, launch_payload, parse_form, render_page
from pipelines.governance.releases_view import ReleaseRow, ReleasesView


def _view() -> ReleasesView:
    def row(rid, status, pending=False, serving=False):
        return ReleaseRow(release_id=rid, status=status, serving=serving, pending=pending, cycle="c", parent=None,
                          created_at="2031-01-01T00:00", gates="passed")
    return ReleasesView(champion="r0003", policy="default-2026.11@x", roles=["ml-lead", "governance"], requests=[],
                        releases=[row("r0005", "candidate", pending=True), row("r0004", "rejected"),
                                  row("r0003", "champion", serving=True), row("r0002", "retired"),
                                  row("r0001", "tainted")],
                        rollback_roles=["governance"])


FORM = {"release_id": ["r0005"], "decision": ["approve"], "role": ["ml-lead"], "reason": ["card reviewed"]}


def test_a_complete_form_becomes_the_decision_jobs_run_config():
    decision = parse_form(FORM, _view(), granted=["ml-lead"])
    config = launch_payload(decision, "assets.definitions", "__repository__")["variables"]["executionParams"]
    assert config["selector"]["jobName"] == "release_decision"
    assert config["runConfigData"] == {"ops": {"decide_release": {"config": {
        "release_id": "r0005", "decision": "approve", "role": "ml-lead", "reason": "card reviewed"}}}}


@pytest.mark.parametrize(("field", "value", "message"), [
    ("reason", "   ", "reason: say why"),
    ("release_id", "r0004", "release: r0004 is not waiting for a decision; pending: r0005"),
    ("release_id", "r0003", "not waiting for a decision"),
    ("decision", "maybe", "decision: choose approve or reject"),
    ("role", "governance", "role: choose one of ml-lead"),  # a policy role this person is not granted
    ("role", "intern", "the policy lets ml-lead, governance decide"),
])
def test_a_field_outside_the_choices_is_refused_by_name(field, value, message):
    with pytest.raises(FormRefused, match=message):
        parse_form({**FORM, field: [value]}, _view(), granted=["ml-lead"])


def test_the_page_offers_only_pending_candidates_and_held_roles():
    page = render_page(_view(), "alice", granted=["ml-lead", "intern"])
    assert "id='decide-r0005'" in page and "decide-r0004" not in page and "decide-r0003" not in page
    assert "<option value='ml-lead'>" in page and "intern" not in page and "<option value='governance'>" not in page
    assert "required" in page.split("textarea")[1], "the browser refuses an empty reason before sending"
    assert "Sign in" in render_page(_view(), None, [])
    assert "hold none of the deciding roles" in render_page(_view(), "bob", granted=["intern"])


def test_a_launch_that_is_refused_reads_as_the_servers_reason():
    assert launch_outcome({"data": {"launchRun": {"__typename": "LaunchRunSuccess", "run": {"runId": "abc"}}}}) == "abc"
    with pytest.raises(FormRefused, match="not in enum"):
        launch_outcome({"data": {"launchRun": {"__typename": "RunConfigValidationInvalid",
                                               "errors": [{"message": "Value not in enum type"}]}}})
    with pytest.raises(FormRefused, match="memgov: you are not signed in"):
        launch_outcome({"data": {"launchRun": {"__typename": "InvalidSubsetError",
                                               "message": "memgov: you are not signed in"}}})


def test_the_forget_form_names_a_bad_field_before_anything_launches():
    from memgov.forget_page import parse_filing

    def form(**fields):
        base = {"subject_ids": "s001, s002", "reason": "erasure request", "legal_basis": "gdpr_art17",
                "deadline_days": "10"}
        return {k: [v] for k, v in {**base, **fields}.items()}

    filing = parse_filing(form(urgent="on"), "olga")
    assert filing.subject_ids == ["s001", "s002"] and filing.urgent and filing.request_id.startswith("ui-")
    config = filing.run_config()["ops"]["file_forget_request"]["config"]
    assert config["legal_basis"] == "gdpr_art17" and config["deadline_days"] == 10.0
    with pytest.raises(FormRefused, match="reason"):
        parse_filing(form(reason=""), "olga")
    with pytest.raises(FormRefused, match="selector"):
        parse_filing(form(subject_ids=""), "olga")
    with pytest.raises(FormRefused, match="legal_basis"):
        parse_filing(form(legal_basis="because"), "olga")
    with pytest.raises(FormRefused, match="deadline_days"):
        parse_filing(form(deadline_days="soon"), "olga")
    with pytest.raises(FormRefused, match="deadline_days"):
        parse_filing(form(deadline_days="-1"), "olga")


def test_the_rollback_form_offers_only_releases_that_may_serve_again():
    from memgov.rollback_page import launch_payload as rollback_launch
    from memgov.rollback_page import parse_rollback, render_rollback

    form = {"to_release": ["r0002"], "role": ["governance"], "reason": ["regression in production"]}
    rollback = parse_rollback(form, _view(), granted=["governance"])
    params = rollback_launch(rollback, "loc", "__repository__")["variables"]["executionParams"]
    assert params["selector"]["jobName"] == "rollback"
    assert params["runConfigData"]["ops"]["rollback_release"]["config"] == {
        "to_release": "r0002", "role": "governance", "reason": "regression in production"}
    for target, why in (("r0001", "it is tainted"), ("r0004", "it is rejected"), ("r0003", "it is champion"),
                        ("r0005", "it is candidate")):
        with pytest.raises(FormRefused, match=f"to_release: {target} cannot serve again \\({why}\\); choose one of r0002"):
            parse_rollback({**form, "to_release": [target]}, _view(), granted=["governance"])
    with pytest.raises(FormRefused, match="role: choose one of none .*lets governance roll back"):
        parse_rollback(form, _view(), granted=["ml-lead"])
    with pytest.raises(FormRefused, match="reason: say why"):
        parse_rollback({**form, "reason": [" "]}, _view(), granted=["governance"])

    page = render_rollback(_view(), "carol", granted=["governance"])
    assert "<option value='r0002'>" in page and "r0001" not in page and "r0004" not in page
    assert "hold none of the rollback roles" in render_rollback(_view(), "alice", granted=["ml-lead"])
    assert render_rollback(_view(), None, []) == ""
    assert "id='rollback-form'" in render_page(_view(), "carol", granted=["governance"])
