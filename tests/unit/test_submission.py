"""Who brought the data is signed over the file's name and hash and follows it into the release: the submitter of a
batch cannot approve the model trained on it; a file changed after submission, a sidecar anyone could have written
and a signature moved to another batch name nobody."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
from support_forget import fact, small_deployment
from support_keys import keyholder

from pipelines.cycle import stages
from pipelines.governance.approvals import requesters
from pipelines.governance.submission import batch_subject, submitter
from pipelines.trust.decisions import sign_statement, statement
from pipelines.trust.keys import generate
from policies import load_policy

POLICY = load_policy("default")


@pytest.fixture
def ws(tmp_path):
    return small_deployment(tmp_path / "home", n_subjects=6)


def submit(ws, path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memgov", "submit", str(path), *args, "--home", str(ws.home)],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "250"})


def rows_file(tmp_path, name: str, rows: list[dict]):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_the_signed_submitter_is_recorded_at_admission_and_counts_as_a_requester(ws, tmp_path):
    key = keyholder(ws.home, "Dana")
    proc = submit(ws, rows_file(tmp_path, "b-dana", [fact(1, 5)]), "--key", key)
    assert proc.returncode == 0 and "submitted by Dana" in proc.stdout, proc.stdout + proc.stderr
    (event,) = [e for e in ws.log.events() if e["action"] == "batch.submitted"]
    assert event["actor"] == "Dana" and event["details"]["signed"]["key_id"]
    stages.admit(ws, POLICY, "b-dana.jsonl")
    assert submitter(ws, "b-dana") == "Dana"
    (admitted,) = [e for e in ws.log.events() if e["action"] == "batch.admitted" and e["object"] == "b-dana"]
    assert admitted["details"]["submitted_by"] == "Dana"
    release = ws.registry.get(ws.registry.champion())
    release = type(release)(**{**vars(release), "data_snapshots": {"batch": "b-dana", "submitted_by": "Dana"}})
    assert "Dana" in requesters(ws, release), "so decide_release refuses Dana's approval of it"


def test_a_file_changed_after_submission_has_no_submitter(ws, tmp_path):
    assert submit(ws, rows_file(tmp_path, "b-swap", [fact(2, 5)]), "--key", keyholder(ws.home, "erin")).returncode == 0
    (ws.inbox / "b-swap.jsonl").write_text(json.dumps(fact(3, 5)) + "\n")  # swapped in the inbox afterwards
    stages.admit(ws, POLICY, "b-swap.jsonl")
    assert submitter(ws, "b-swap") is None
    (admitted,) = [e for e in ws.log.events() if e["action"] == "batch.admitted" and e["object"] == "b-swap"]
    assert "changed after it was submitted" in admitted["details"]["submitter_note"]


def test_a_sidecar_written_by_an_inbox_writer_names_nobody(ws, tmp_path):
    """Whoever can write to the inbox can write a sidecar, but cannot sign one with a keyholder's key."""
    ws.inbox.mkdir(parents=True, exist_ok=True)
    path = ws.inbox / "b-forged.jsonl"
    path.write_text(json.dumps(fact(4, 5)) + "\n")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    (ws.inbox / "b-forged.submitter.json").write_text(json.dumps({"submitted_by": "erin", "sha256": digest}))
    stages.admit(ws, POLICY, "b-forged.jsonl")
    assert submitter(ws, "b-forged") is None

    # A real signature moved onto another batch, and one by a key the keyring does not know, name nobody either.
    keyholder(ws.home, "erin")
    assert submit(ws, rows_file(tmp_path, "b-real", [fact(5, 5)]), "--key", keyholder(ws.home, "erin")).returncode == 0
    moved = ws.inbox / "b-moved.jsonl"
    moved.write_bytes((ws.inbox / "b-real.jsonl").read_bytes())
    (ws.inbox / "b-moved.submitter.json").write_bytes((ws.inbox / "b-real.submitter.json").read_bytes())
    stages.admit(ws, POLICY, "b-moved.jsonl")
    assert submitter(ws, "b-moved") is None
    stranger = tmp_path / "stranger.key"
    generate(stranger)
    own = ws.inbox / "b-own.jsonl"
    own.write_text(json.dumps(fact(5, 6)) + "\n")
    envelope = sign_statement(stranger, statement("submit", batch_subject("b-own", hashlib.sha256(own.read_bytes())
                                                                          .hexdigest()), "submitter", "mine"))
    (ws.inbox / "b-own.submitter.json").write_text(json.dumps(envelope))
    stages.admit(ws, POLICY, "b-own.jsonl")
    assert submitter(ws, "b-own") is None
    (event,) = [e for e in ws.log.events() if e["action"] == "batch.admitted" and e["object"] == "b-own"]
    assert "not in the deployment's keyring" in event["details"]["submitter_note"]


def test_a_policy_can_require_signed_submissions(ws, tmp_path):
    strict = POLICY.model_copy(update={"admission": POLICY.admission.model_copy(
        update={"require_signed_submission": True})})
    ws.inbox.mkdir(parents=True, exist_ok=True)
    (ws.inbox / "b-dropped.jsonl").write_text(json.dumps(fact(4, 5)) + "\n")
    out = stages.admit(ws, strict, "b-dropped.jsonl")
    assert out.admitted == 0 and out.quarantined == 1
    (row,) = ws.data.records("quarantine", "b-dropped")
    assert "unsigned_submission" in row["quarantine_reasons"][0] and "memgov submit" in row["quarantine_reasons"][0]
    assert submit(ws, rows_file(tmp_path, "b-signed", [fact(5, 5)]), "--key", keyholder(ws.home, "erin")).returncode == 0
    assert stages.admit(ws, strict, "b-signed.jsonl").admitted == 1


def test_bad_submissions_are_refused_naming_the_fix(ws, tmp_path):
    path = rows_file(tmp_path, "b-ok", [fact(4, 5)])
    assert "unsigned submission is refused" in " ".join((proc := submit(ws, path)).stdout.split())
    assert proc.returncode == 2
    key = keyholder(ws.home, "erin")
    proc = submit(ws, path, "--key", key, "--name", "../escape")
    assert proc.returncode == 2 and "use letters, digits" in proc.stdout + proc.stderr
    assert submit(ws, path, "--key", key).returncode == 0
    proc = submit(ws, path, "--key", key)
    assert proc.returncode == 2 and "already in the inbox" in proc.stdout + proc.stderr
    (tmp_path / "notes.txt").write_text("hello")
    proc = submit(ws, tmp_path / "notes.txt", "--key", key)
    assert proc.returncode == 2 and ".jsonl or .parquet" in proc.stdout + proc.stderr
    stranger = tmp_path / "stranger.key"
    generate(stranger)
    proc = submit(ws, rows_file(tmp_path, "b-who", [fact(5, 7)]), "--key", str(stranger))
    assert proc.returncode == 2 and "not in the deployment's keyring" in " ".join(proc.stdout.split())
    assert not (ws.inbox / "b-who.jsonl").exists(), "nothing is copied for a refused submission"
