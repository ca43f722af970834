"""Artifact store: the same behaviour on a local folder and on S3 spoken over HTTP (moto server)."""

from __future__ import annotations

import datetime as dt
import os
import threading
import uuid
from pathlib import Path

import boto3
import pytest
from support_s3 import CREDS, s3_server

from pipelines.core.digests import digest_of, dir_digest
from pipelines.state.store import ArtifactStore, LocalStore, S3Store, open_store


@pytest.fixture(scope="module")
def s3_endpoint():
    with s3_server() as endpoint:
        yield endpoint


def _bucket(endpoint: str, **create_kwargs) -> tuple[str, object]:
    client = boto3.client("s3", endpoint_url=endpoint, **CREDS)
    name = f"memgov-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name, **create_kwargs)
    return name, client


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ArtifactStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket, _ = _bucket(endpoint)
    return open_store(f"s3://{bucket}/pfx", endpoint_url=endpoint, cache_dir=tmp_path / "cache", **CREDS)


def _tree(root: Path) -> Path:
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "a.txt").write_text("alpha")
    (root / "sub" / "b.bin").write_bytes(bytes(range(256)))
    (root / "sub" / "deep" / "c.json").write_text('{"x": 1}')
    (root / "dup.txt").write_text("alpha")
    return root


def test_blobs_are_content_addressed_and_idempotent(store):
    d1 = store.put_bytes(b"hello")
    assert d1 == "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert store.put_bytes(b"hello") == d1
    assert store.has(d1) and store.get_bytes(d1) == b"hello"
    missing = "sha256:" + "0" * 64
    assert not store.has(missing)
    with pytest.raises(KeyError):
        store.get_bytes(missing)
    with pytest.raises(ValueError, match="malformed"):
        store.get_bytes("md5:abc")


def test_a_file_is_stored_streamed_under_the_digest_of_its_bytes(store, tmp_path):
    data = os.urandom(3 << 20)
    path = tmp_path / "weights.bin"
    path.write_bytes(data)
    digest = store.put_file(path)
    assert digest == digest_of(data) and store.put_file(path) == digest and store.put_bytes(data) == digest
    assert store.get_bytes(digest) == data


def test_delete_blob_removes_every_copy(store):
    d = store.put_bytes(b"personal row")
    store.get_bytes(d)  # fills the S3 read cache, which must go too
    report = store.delete_blob(d)
    assert report.complete and report.deleted and report.digest == d
    assert not store.has(d)
    with pytest.raises(KeyError):
        store.get_bytes(d)
    assert store.delete_blob(d).deleted == []


def test_dir_round_trip(store, tmp_path):
    src = _tree(tmp_path / "src")
    digest = store.put_dir(src)
    assert digest == dir_digest(src) and store.put_dir(src) == digest
    blobs = store.blobs_of_dir(digest)
    assert len(blobs) == 3  # a.txt and dup.txt share one blob
    assert store.blobs_of_dir(digest, include_manifest=True)[0] == digest
    out = store.get_dir(digest, tmp_path / "out")
    assert (out / "sub" / "b.bin").read_bytes() == bytes(range(256))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "a.txt",
        "dup.txt",
        "sub/b.bin",
        "sub/deep/c.json",
    ]
    assert store.get_dir(digest, out) == out  # already restored: accepted as is
    (out / "a.txt").write_text("changed")
    with pytest.raises(ValueError, match="other files"):
        store.get_dir(digest, out)


def test_documents(store):
    assert store.read_json("cfg/x", default=None) is None
    with pytest.raises(KeyError):
        store.read_json("cfg/x")
    store.write_json("cfg/x", {"a": [1, 2]})
    store.write_json("cfg/y", 3)
    store.write_json("other/z", "s")
    assert store.read_json("cfg/x") == {"a": [1, 2]}
    assert store.list_keys("cfg/") == ["cfg/x", "cfg/y"]
    store.put_bytes(b"blob")  # blobs never show up as documents
    assert store.list_keys() == ["cfg/x", "cfg/y", "other/z"]
    store.delete_key("cfg/x")
    assert store.list_keys("cfg/") == ["cfg/y"]
    for bad in ["../etc", "/abs", "a//b", "blobs/sha256/x", ".hidden", ""]:
        with pytest.raises(ValueError, match="key"):
            store.write_json(bad, 1)


def test_compare_and_swap(store):
    assert store.compare_and_swap("ptr", None, "r0001")
    assert not store.compare_and_swap("ptr", None, "r0002")  # must not exist yet
    assert not store.compare_and_swap("ptr", "r0005", "r0002")  # stale expectation
    assert store.read_text("ptr") == "r0001"
    assert store.compare_and_swap("ptr", "r0001", "r0002")
    assert store.read_text("ptr") == "r0002"
    assert store.update_json("counter", lambda n: (n or 0) + 1) == 1
    assert store.update_json("counter", lambda n: n + 1) == 2


def _race(*calls):
    """Run the calls in threads released at the same instant; return their results in order."""
    start = threading.Barrier(len(calls))
    results: list = [None] * len(calls)

    def run(i: int) -> None:
        start.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return results


def test_cas_race_exactly_one_winner(store):
    store.compare_and_swap("champion", None, "r0001")
    for trial in range(5):
        current = store.read_text("champion")
        names = [f"t{trial}a", f"t{trial}b"]
        won = _race(*[lambda n=n, c=current: store.compare_and_swap("champion", c, n) for n in names])
        assert sorted(won) == [False, True], won
        assert store.read_text("champion") == names[won.index(True)]


def test_update_json_counts_every_concurrent_increment(store):
    def bump() -> None:
        for _ in range(5):
            store.update_json("n", lambda n: (n or 0) + 1)

    threads = [threading.Thread(target=bump) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert store.read_json("n") == 20


def test_open_store_urls(tmp_path):
    assert isinstance(open_store(tmp_path / "a"), LocalStore)
    local = open_store((tmp_path / "b").as_uri())
    assert isinstance(local, LocalStore) and local.uri == (tmp_path / "b").as_uri()
    s3 = open_store("s3://bkt/some/prefix", endpoint_url="http://127.0.0.1:1", **CREDS)
    assert isinstance(s3, S3Store) and (s3.bucket, s3.prefix, s3.uri) == ("bkt", "some/prefix", "s3://bkt/some/prefix")
    with pytest.raises(ValueError, match="scheme"):
        open_store("ftp://x/y")
    with pytest.raises(ValueError, match="S3 options"):
        open_store(tmp_path / "c", endpoint_url="http://x")


def test_local_writes_leave_no_temp_files_and_blobs_are_read_only(tmp_path):
    store = LocalStore(tmp_path / "s")
    d = store.put_bytes(b"x" * 1000)
    store.write_json("k", {"v": 1})
    store.compare_and_swap("p", None, "1")
    assert list((tmp_path / "s" / ".tmp").iterdir()) == []
    blob = tmp_path / "s" / "blobs" / "sha256" / d[7:9] / d[7:]
    assert blob.stat().st_mode & 0o222 == 0


def test_s3_versions_and_object_lock(s3_endpoint, tmp_path):
    bucket, client = _bucket(s3_endpoint, ObjectLockEnabledForBucket=True)
    store = S3Store(bucket, "p", endpoint_url=s3_endpoint, **CREDS)
    digest = store.put_bytes(b"row about a person")
    key = f"p/blobs/sha256/{digest[7:9]}/{digest[7:]}"
    # a second, locked version of the same object and a plain one after it
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    locked = client.put_object(
        Bucket=bucket,
        Key=key,
        Body=b"row about a person",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=until,
    )["VersionId"]
    client.put_object(Bucket=bucket, Key=key, Body=b"row about a person")
    assert len(client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]) == 3

    report = store.delete_blob(digest)
    assert not report.complete
    assert [h["version_id"] for h in report.legal_hold] == [locked]
    assert report.legal_hold[0]["error"]
    assert len(report.deleted) == 2
    left = client.list_object_versions(Bucket=bucket, Prefix=key)
    assert [v["VersionId"] for v in left.get("Versions", [])] == [locked]
    assert not left.get("DeleteMarkers")


def test_s3_plain_delete_of_versioned_blob_leaves_no_version(s3_endpoint):
    bucket, client = _bucket(s3_endpoint)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    store = S3Store(bucket, endpoint_url=s3_endpoint, **CREDS)
    digest = store.put_bytes(b"v")
    client.delete_object(Bucket=bucket, Key=f"blobs/sha256/{digest[7:9]}/{digest[7:]}")  # only a delete marker
    report = store.delete_blob(digest)
    assert report.complete and len(report.deleted) == 2  # the version and the marker
    assert "Versions" not in client.list_object_versions(Bucket=bucket, Prefix="blobs/")


def test_s3_governance_retention_is_bypassed_and_what_cannot_go_is_named(s3_endpoint):
    """The artifact bucket's default GOVERNANCE retention (infra/s3/bucket.json) must not turn every deletion into a
    "legal hold": it is bypassed. COMPLIANCE retention and a legal hold cannot be, so each is reported by name."""
    bucket, client = _bucket(s3_endpoint, ObjectLockEnabledForBucket=True)
    client.put_object_lock_configuration(Bucket=bucket, ObjectLockConfiguration={
        "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "GOVERNANCE", "Days": 30}}})
    store = S3Store(bucket, "p", endpoint_url=s3_endpoint, **CREDS)
    plain = store.put_bytes(b"a row about a person")
    report = store.delete_blob(plain)
    assert report.complete and len(report.deleted) == 1 and not store.has(plain)

    held = store.put_bytes(b"a row under a compliance lock")
    key = f"p/blobs/sha256/{held[7:9]}/{held[7:]}"
    until = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    compliance = client.put_object(Bucket=bucket, Key=key, Body=b"a row under a compliance lock",
                                   ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)["VersionId"]
    hold = client.put_object(Bucket=bucket, Key=key, Body=b"a row under a compliance lock",
                             ObjectLockLegalHoldStatus="ON")["VersionId"]
    report = store.delete_blob(held)
    names = {h["version_id"]: h["hold"] for h in report.legal_hold}
    assert set(names) == {compliance, hold}, report
    assert names[compliance].startswith("s3-object-lock-compliance until ")
    assert names[hold] == "s3-object-lock-legal-hold"
    assert len(report.deleted) == 1, "the first version, under GOVERNANCE only, went"


def test_a_blob_corrupted_on_disk_is_refused_on_load_by_its_hash(tmp_path):
    store = LocalStore(tmp_path / "store")
    digest = store.put_bytes(b"weights of r0002")
    path = store._blob_path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"weights of r0002, flipped")  # a disk error, or someone editing the artifact folder
    with pytest.raises(ValueError, match="is corrupt \\(content hash differs\\)"):
        store.get_bytes(digest)
    with pytest.raises(ValueError, match="is corrupt"), store.open_blob(digest):  # the streamed read checks too
        pass


def test_a_blob_opened_as_a_file_reads_its_bytes_and_only_when_whole(store):
    data = os.urandom(3 << 20)
    digest = store.put_bytes(data)
    with store.open_blob(digest) as fh:
        assert fh.read() == data
    with store.open_blob(digest) as fh:  # the second read may come from the S3 read cache
        assert fh.read() == data
    with pytest.raises(KeyError), store.open_blob("sha256:" + "0" * 64):
        pass
    if isinstance(store, S3Store):  # an object altered in the bucket is refused, and never enters the read cache
        other = store.put_bytes(b"an adapter")
        store.client.put_object(Bucket=store.bucket, Key=store._blob_key(other), Body=b"an adapter, altered")
        with pytest.raises(ValueError, match="is corrupt"), store.open_blob(other):
            pass
        assert not store._cache_path(other).exists()
