"""A forget request signed with the requester's key: the keyring names the requester, not the command line; a
request that was never signed (written into the store directly) or carries another request's signature deletes
nothing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from support_forget import holdings, small_deployment, subject
from support_keys import admin_key, keyholder
from typer.testing import CliRunner

from memgov.cli import app
from pipelines.deployment.workspace import Workspace
from pipelines.forget import process_request
from pipelines.forget.filing import file_request, sign_request, submit_forget_request
from pipelines.state.requests import ForgetRequest
from pipelines.trust.decisions import SignatureRefused

runner = CliRunner()


def forget(home, *args: str):
    base = ["forget", "--home", str(home), "--id", "req-signed", "--subject-id", "s001", "--reason", "erasure request"]
    return runner.invoke(app, [*base, *args])


def test_a_signed_request_is_filed_under_the_keys_holder(tmp_path):
    home = tmp_path / "home"
    key = keyholder(home, "Privacy-Office")
    out = forget(home, "--key", key)
    assert out.exit_code == 0, out.output
    ws = Workspace.open(home)
    req = ws.requests.get("req-signed")
    assert req.requester == "Privacy-Office"
    assert req.evidence["filed"]["signed"]["key_id"].startswith("k:")
    (event,) = [e for e in ws.log.events() if e["action"] == "forget.received"]
    assert event["actor"] == "Privacy-Office" and event["details"]["signed"]["via"] == "signature"


def test_a_signed_request_naming_another_requester_is_refused(tmp_path):
    home = tmp_path / "home"
    key = keyholder(home, "privacy-office")
    out = forget(home, "--key", key, "--requester", "legal")
    assert out.exit_code == 2 and "names legal as its requester" in " ".join(out.output.split())
    assert Workspace.open(home).requests.list() == []


def test_a_key_outside_the_keyring_files_nothing(tmp_path):
    home = tmp_path / "home"
    keyholder(home, "privacy-office")
    stranger = tmp_path / "stranger.key"
    assert runner.invoke(app, ["keys", "new", str(stranger)]).exit_code == 0
    out = forget(home, "--key", str(stranger))
    assert out.exit_code == 2 and "not in the deployment's keyring" in " ".join(out.output.split())
    assert Workspace.open(home).requests.list() == []


def test_an_unsigned_request_is_refused_at_the_cli(tmp_path):
    out = forget(tmp_path / "home", "--requester", "privacy-office")
    assert out.exit_code == 2 and "unsigned forget request is refused" in " ".join(out.output.split())


def _request(request_id: str, requester: str = "privacy-office", who: int = 3) -> ForgetRequest:
    return ForgetRequest(request_id=request_id, requester=requester, selector={"subject_ids": [subject(who)]},
                         reason="erasure request", legal_basis="gdpr_art17",
                         deadline=dt.datetime.now(dt.UTC) + dt.timedelta(days=3))


def test_a_request_written_into_the_store_directly_deletes_nothing(tmp_path):
    ws = small_deployment(tmp_path / "home")
    ws.requests.submit(_request("req-forged"))  # someone with write access to the request database
    out = process_request(ws, "req-forged")
    assert out["state"] == "failed" and "carries no requester's signature" in ws.requests.get("req-forged").evidence[
        "failure"]
    assert holdings(ws, {subject(3)}), "the data is untouched"
    assert not ws.requests.tombstones().subjects


def test_a_signature_lifted_from_another_request_deletes_nothing(tmp_path):
    ws = small_deployment(tmp_path / "home")
    key = keyholder(ws.home, "privacy-office")
    genuine = _request("req-genuine", who=2)
    envelope = sign_request(key, genuine)
    file_request(ws, genuine, envelope)
    with pytest.raises(SignatureRefused, match="does not cover"):
        file_request(ws, _request("req-other", who=3), envelope)
    ws.requests.submit(_request("req-lifted", who=3))
    ws.requests.update_evidence("req-lifted", lambda _s, e: {**e, "filed": {"envelope": envelope}})
    assert process_request(ws, "req-lifted")["state"] == "failed"
    assert holdings(ws, {subject(3)}), "the lifted signature covers another request's selector"
    assert process_request(ws, "req-genuine")["state"] in ("planned", "applied", "verified")
    assert not holdings(ws, {subject(2)})


def test_the_python_api_signs_with_the_requesters_key(tmp_path):
    ws = small_deployment(tmp_path / "home")
    key = keyholder(ws.home, "privacy-office")
    fields = {"request_id": "req-api", "selector": {"subject_ids": [subject(1)]}, "reason": "erasure request",
              "legal_basis": "gdpr_art17", "deadline_days": 3}
    stored, created = submit_forget_request(home=ws.home, key=key, **fields)
    assert created and stored.requester == "privacy-office"
    again = {**{k: v for k, v in fields.items() if k != "deadline_days"}, "deadline": stored.deadline}
    assert submit_forget_request(home=ws.home, key=key, **again)[1] is False, "a resubmission is the same request"
    retried, created = submit_forget_request(home=ws.home, key=key, **fields)  # the very same call, retried
    assert created is False and retried.deadline == stored.deadline, "deadline_days counts from the first filing"
    with pytest.raises(ValueError, match="key: give the requester's private key file"):
        submit_forget_request(home=ws.home, key=None, **fields)
    with pytest.raises(SignatureRefused, match="names legal as its requester"):
        submit_forget_request(home=ws.home, key=key, **{**fields, "request_id": "req-api-2", "requester": "legal"})


def test_a_rotated_key_signs_for_its_owner_and_the_revoked_one_for_nobody(tmp_path):
    """Key rotation: the new key is granted, the old one revoked. A request signed with the old key is refused
    at the CLI, and one filed with it before the revocation deletes nothing at its scrub."""
    from pipelines.trust.keys import generate, load_private, public_text

    ws = small_deployment(tmp_path / "home")
    old = keyholder(ws.home, "privacy-office")
    pending = _request("req-before")
    file_request(ws, pending, sign_request(old, pending))
    new = tmp_path / "new.key"
    new_public = generate(new)
    old_public = public_text(load_private(Path(old)).public_key())
    granted = runner.invoke(app, ["keys", "grant", "privacy-office", "--key", new_public, "--role", "requester",
                                  "--by", admin_key(ws.home), "--reason", "rotation", "--home", str(ws.home)])
    assert granted.exit_code == 0, granted.output
    revoked = runner.invoke(app, ["keys", "revoke", "privacy-office", "--key", old_public, "--by", admin_key(ws.home),
                                  "--reason", "rotation", "--home", str(ws.home)])
    assert revoked.exit_code == 0, revoked.output
    refused = forget(ws.home, "--key", old)
    assert refused.exit_code == 2 and "not in the deployment's keyring" in " ".join(refused.output.split())
    accepted = forget(ws.home, "--key", str(new))
    assert accepted.exit_code == 0, accepted.output
    out = process_request(ws, "req-before")
    assert out["state"] == "failed", "a signature by a revoked key no longer names its requester"
    assert holdings(ws, {subject(3)}), "the data is untouched"
    actions = [e["action"] for e in ws.log.events()]
    assert "keyring.revoked" in actions
    again = runner.invoke(app, ["keys", "revoke", "privacy-office", "--key", old_public, "--by", admin_key(ws.home),
                                "--reason", "twice", "--home", str(ws.home)])
    assert again.exit_code == 2 and "not privacy-office's" in again.output
