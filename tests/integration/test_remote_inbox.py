"""The inbox in a bucket (MEMGOV_INBOX=s3://…), on moto's server: pods share no disk, so a batch dropped or submitted
through one pod is pending on every other, a change one pod makes reaches the others, and a rewritten or removed
file leaves no earlier version in the versioned bucket."""

from __future__ import annotations

import json

import boto3
import pytest
from support_s3 import CREDS, create_buckets, s3_server, use_endpoint

from pipelines.cycle.stages import pending_batches
from pipelines.deployment.workspace import Workspace


@pytest.fixture
def bucket(monkeypatch):
    with s3_server() as endpoint:
        use_endpoint(monkeypatch, endpoint)
        name = create_buckets(endpoint)
        monkeypatch.setenv("MEMGOV_INBOX", f"s3://{name}/inbox")
        for var in ("MEMGOV_STORE", "MEMGOV_LOG_MIRROR", "MEMGOV_REQUESTS_URL"):
            monkeypatch.delenv(var, raising=False)
        yield name, boto3.client("s3", endpoint_url=endpoint, **CREDS)


def versions(client, bucket: str, key: str) -> list[dict]:
    page = client.list_object_versions(Bucket=bucket, Prefix=f"inbox/{key}")
    return [v for v in page.get("Versions", []) + page.get("DeleteMarkers", []) if v["Key"] == f"inbox/{key}"]


def rows(n: int, tag: str) -> str:
    return "".join(json.dumps({"id": f"{tag}-{i}", "text": f"{tag} {i}"}) + "\n" for i in range(n))


def test_a_batch_dropped_on_one_pod_is_pending_on_another_and_changes_travel(bucket, tmp_path):
    name, client = bucket
    pod_a, pod_b = Workspace.open(tmp_path / "pod-a"), Workspace.open(tmp_path / "pod-b")
    pod_a.inbox.mkdir(parents=True)
    (pod_a.inbox / "b001.jsonl").write_text(rows(3, "first"))

    assert [p.name for p in pending_batches(pod_a)] == ["b001.jsonl"]  # sent up by the pod it was dropped on
    assert [p.name for p in pending_batches(pod_b)] == ["b001.jsonl"], "the other pod sees it"
    assert (pod_b.inbox / "b001.jsonl").read_text() == rows(3, "first")

    # pod B rewrites the file (what a scrub does): the bucket keeps only the new bytes, pod A's copy follows
    (pod_b.inbox / "b001.jsonl").write_text(rows(2, "first"))
    pod_b.inbox_changed(pod_b.inbox / "b001.jsonl")
    assert len(versions(client, name, "b001.jsonl")) == 1, "no earlier version stays in the bucket's history"
    assert client.get_object(Bucket=name, Key="inbox/b001.jsonl")["Body"].read().decode() == rows(2, "first")
    pending_batches(pod_a)
    assert (pod_a.inbox / "b001.jsonl").read_text() == rows(2, "first")

    # a file dropped on pod B under a name the bucket already has does not replace it, and is not lost
    (pod_b.inbox / "b002.jsonl").write_text(rows(1, "bucket's"))
    pod_b.inbox_changed(pod_b.inbox / "b002.jsonl")
    (pod_a.inbox / "b002.jsonl").write_text(rows(1, "local"))
    pending_batches(pod_a)
    assert (pod_a.inbox / "b002.jsonl").read_text() == rows(1, "bucket's")
    assert [p.read_text() for p in pod_a.inbox.glob(".conflict-*-b002.jsonl")] == [rows(1, "local")]
    (pod_b.inbox / "b002.jsonl").unlink()
    pod_b.inbox_changed(pod_b.inbox / "b002.jsonl")

    # pod A removes it (a file removed whole): gone from the bucket with every version, and from pod B's copy
    (pod_a.inbox / "b001.jsonl").unlink()
    pod_a.inbox_changed(pod_a.inbox / "b001.jsonl")
    assert versions(client, name, "b001.jsonl") == []
    assert pending_batches(pod_b) == [] and not (pod_b.inbox / "b001.jsonl").exists()


def test_a_signed_submission_through_one_pod_is_admitted_with_its_submitter_on_another(bucket, tmp_path,
                                                                                          monkeypatch):
    from support_keys import keyholder

    from pipelines.governance import submission

    monkeypatch.setenv("MEMGOV_KEYRING", str(tmp_path / "config" / "keyring.yaml"))  # mounted in every pod
    monkeypatch.setenv("MEMGOV_SYSTEM_KEY", str(tmp_path / "secret" / "system.key"))
    source = tmp_path / "feed.jsonl"
    source.write_text(rows(2, "fed"))
    key = keyholder(tmp_path / "pod-a", "sam", "submitter")
    pod_a, pod_b = Workspace.open(tmp_path / "pod-a"), Workspace.open(tmp_path / "pod-b")
    assert submission.submit(pod_a, source, key, name="fed-1").submitted_by == "sam"
    with pytest.raises(ValueError, match="already in the inbox"):
        submission.submit(Workspace.open(tmp_path / "pod-c"), source, key, name="fed-1")

    (path,) = pending_batches(pod_b)
    assert path.name == "fed-1.jsonl" and (pod_b.inbox / "fed-1.submitter.json").is_file()
    assert submission.record_at_admission(pod_b, path).submitted_by == "sam"


def test_an_inbox_url_that_is_not_s3_is_refused_naming_the_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMGOV_INBOX", "/srv/shared/inbox")
    with pytest.raises(ValueError, match="MEMGOV_INBOX='/srv/shared/inbox': give s3://bucket/prefix"):
        pending_batches(Workspace.open(tmp_path / "pod"))
