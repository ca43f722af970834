"""Who brought the data is recorded with the file's hash and follows it into the release: the submitter of a batch
cannot approve the model trained on it, and a file changed after submission has no submitter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from support_forget import fact, small_deployment

from pipelines.cycle import stages
from pipelines.cycle.governance import requesters
from pipelines.cycle.submission import submitter
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


def test_the_submitter_is_recorded_at_admission_and_counts_as_a_requester(ws, tmp_path):
    proc = submit(ws, rows_file(tmp_path, "b-dana", [fact(1, 5)]), "--by", "Dana")
    assert proc.returncode == 0 and "submitted by Dana" in proc.stdout, proc.stdout + proc.stderr
    assert [e["actor"] for e in ws.log.events() if e["action"] == "batch.submitted"] == ["Dana"]
    stages.admit(ws, POLICY, "b-dana.jsonl")
    assert submitter(ws, "b-dana") == "Dana"
    (admitted,) = [e for e in ws.log.events() if e["action"] == "batch.admitted" and e["object"] == "b-dana"]
    assert admitted["details"]["submitted_by"] == "Dana"
    release = ws.registry.get(ws.registry.champion())
    release = type(release)(**{**vars(release), "data_snapshots": {"batch": "b-dana", "submitted_by": "Dana"}})
    assert "Dana" in requesters(ws, release), "so decide_release refuses Dana's approval of it"


def test_a_file_changed_after_submission_has_no_submitter(ws, tmp_path):
    assert submit(ws, rows_file(tmp_path, "b-swap", [fact(2, 5)]), "--by", "erin").returncode == 0
    (ws.inbox / "b-swap.jsonl").write_text(json.dumps(fact(3, 5)) + "\n")  # swapped in the inbox afterwards
    stages.admit(ws, POLICY, "b-swap.jsonl")
    assert submitter(ws, "b-swap") is None
    (admitted,) = [e for e in ws.log.events() if e["action"] == "batch.admitted" and e["object"] == "b-swap"]
    assert "changed after it was submitted" in admitted["details"]["submitter_note"]


def test_bad_submissions_are_refused_naming_the_fix(ws, tmp_path):
    path = rows_file(tmp_path, "b-ok", [fact(4, 5)])
    assert "--by" in (proc := submit(ws, path)).stdout + proc.stderr and proc.returncode == 2
    proc = submit(ws, path, "--by", "erin", "--name", "../escape")
    assert proc.returncode == 2 and "use letters, digits" in proc.stdout + proc.stderr
    assert submit(ws, path, "--by", "erin").returncode == 0
    proc = submit(ws, path, "--by", "erin")
    assert proc.returncode == 2 and "already in the inbox" in proc.stdout + proc.stderr
    (tmp_path / "notes.txt").write_text("hello")
    proc = submit(ws, tmp_path / "notes.txt", "--by", "erin")
    assert proc.returncode == 2 and ".jsonl or .parquet" in proc.stdout + proc.stderr
