"""A forget request signed with the requester's key: the keyring names the requester, not the command line."""

from __future__ import annotations

from support_keys import keyholder
from typer.testing import CliRunner

from memgov.cli import app
from pipelines.workspace import Workspace

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
    assert out.exit_code == 2 and "claims to be legal's" in " ".join(out.output.split())
    assert Workspace.open(home).requests.list() == []


def test_a_key_outside_the_keyring_files_nothing(tmp_path):
    home = tmp_path / "home"
    keyholder(home, "privacy-office")
    stranger = tmp_path / "stranger.key"
    assert runner.invoke(app, ["keys", "new", str(stranger)]).exit_code == 0
    out = forget(home, "--key", str(stranger))
    assert out.exit_code == 2 and "not in the deployment's keyring" in " ".join(out.output.split())
    assert Workspace.open(home).requests.list() == []
