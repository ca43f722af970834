"""The change log's mirror, against moto's S3 server over HTTP: it lives in its own bucket, every event object is
under COMPLIANCE Object Lock, and `memgov log verify` reads every version of every event object, so each way of
rewriting the local log (or the mirror) is reported with the sequence number."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from support_s3 import CREDS, create_buckets, free_port, s3_server, use_endpoint

from pipelines.deployment.workspace import Workspace
from pipelines.state.ledger.changelog import event_hash
from pipelines.state.ledger.mirror import MirrorUnavailable, mirror_url

ROOT = Path(__file__).resolve().parents[2]
N_EVENTS = 6


@pytest.fixture(scope="module")
def endpoint():
    with s3_server() as url:
        yield url


@pytest.fixture
def s3(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, **CREDS)




@pytest.fixture
def env(endpoint, monkeypatch) -> None:
    use_endpoint(monkeypatch, endpoint)
    for key in ("MEMGOV_LOG_MIRROR", "MEMGOV_LOG_RETENTION_DAYS"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def bucket(env, endpoint, monkeypatch) -> str:
    name = create_buckets(endpoint)
    monkeypatch.setenv("MEMGOV_STORE", f"s3://{name}/deploy")
    return name


@pytest.fixture
def ws(bucket, tmp_path) -> Workspace:
    ws = Workspace.open(tmp_path / "home")
    for i in range(N_EVENTS):
        ws.log.append("ops", "note", f"thing-{i}", reason=f"step {i}")
    return ws


def key(seq: int) -> str:
    return f"deploy/changelog/{seq:08d}.json"


def lines(ws: Workspace) -> list[str]:
    return ws.log.path.read_text().splitlines(keepends=True)


def write(ws: Workspace, new: list[str]) -> None:
    ws.log.path.write_text("".join(new))


def rechain(events: list[dict]) -> list[str]:
    """Renumber and re-hash every event: a file that verifies as a chain again."""
    prev, out = "0" * 64, []
    for i, event in enumerate(events, start=1):
        event = {**event, "seq": i, "prev_hash": prev}
        event["hash"] = prev = event_hash(event)
        out.append(json.dumps(event, sort_keys=True) + "\n")
    return out


def problems(ws: Workspace) -> list[tuple[int, str]]:
    return Workspace.open(ws.home).log.mirror_problems()


def verify_cli(home: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "memgov", "log", "verify", "--home", str(home)],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "4000"})
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    return proc


def test_the_mirror_is_its_own_bucket_and_every_event_object_is_locked(ws, s3, bucket):
    assert ws.log.mirror.uri == f"s3://{bucket}-log/deploy"
    artifacts = s3.list_object_versions(Bucket=bucket).get("Versions", [])
    assert not [v["Key"] for v in artifacts if "changelog" in v["Key"]], "no event is mirrored among the artifacts"
    expected = dt.datetime.now(dt.UTC) + dt.timedelta(days=3650)
    for seq, event in enumerate(ws.log.events(), start=1):
        versions = s3.list_object_versions(Bucket=f"{bucket}-log", Prefix=key(seq))["Versions"]
        assert len(versions) == 1
        head = s3.head_object(Bucket=f"{bucket}-log", Key=key(seq))
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert abs(head["ObjectLockRetainUntilDate"] - expected) < dt.timedelta(hours=1)
        body = s3.get_object(Bucket=f"{bucket}-log", Key=key(seq))["Body"].read()
        assert json.loads(body) == event
    proc = verify_cli(ws.home)
    assert proc.returncode == 0, proc.stdout
    assert f"{N_EVENTS} events, hash chain intact" in proc.stdout and "held once in the mirror" in proc.stdout


def test_retention_days_come_from_the_deployment_environment(bucket, s3, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMGOV_LOG_RETENTION_DAYS", "7")
    ws = Workspace.open(tmp_path / "home")
    ws.log.append("ops", "note", "x")
    until = s3.head_object(Bucket=f"{bucket}-log", Key=key(1))["ObjectLockRetainUntilDate"]
    assert abs(until - (dt.datetime.now(dt.UTC) + dt.timedelta(days=7))) < dt.timedelta(hours=1)
    monkeypatch.setenv("MEMGOV_LOG_RETENTION_DAYS", "seven")
    proc = verify_cli(ws.home)
    assert proc.returncode == 2 and "MEMGOV_LOG_RETENTION_DAYS" in proc.stdout


def test_where_the_mirror_lives():
    assert mirror_url("s3://memgov-artifacts/prod") == "s3://memgov-artifacts-log/prod"
    assert mirror_url("s3://memgov-artifacts") == "s3://memgov-artifacts-log"
    assert mirror_url("/var/lib/memgov/artifacts") is None
    assert mirror_url("/var/lib/memgov/artifacts", "s3://audit-log/memgov") == "s3://audit-log/memgov"
    assert mirror_url("s3://art/prod", "s3://art/prod-log") == "s3://art/prod-log", "a disjoint prefix is allowed"
    for store, configured in (("s3://art/prod", "s3://art/prod/log"), ("s3://art", "s3://art/log"),
                              ("s3://art/prod/x", "s3://art/prod")):
        with pytest.raises(ValueError, match="overlaps the artifact store"):
            mirror_url(store, configured)
    with pytest.raises(ValueError, match="not an S3 URL"):
        mirror_url("s3://art/prod", "file:///tmp/log")
    with pytest.raises(ValueError, match="MEMGOV_LOG_MIRROR"):
        mirror_url(f"s3://{'b' * 62}/prod")


def test_a_mirror_inside_the_artifact_store_is_refused_by_the_cli(ws, bucket, monkeypatch):
    monkeypatch.setenv("MEMGOV_LOG_MIRROR", f"s3://{bucket}/deploy/changelog-mirror")
    proc = verify_cli(ws.home)
    assert proc.returncode == 2 and "overlaps the artifact store" in proc.stdout


# -- what verify detects ----------------------------------------------------------------------------------------------
def test_an_edited_line(ws):
    new = lines(ws)
    new[2] = new[2].replace("step 2", "step 9")
    write(ws, new)
    assert problems(ws) == [(3, "event 3: the local line differs from the mirror (edited, moved, inserted or "
                                "re-chained)")]
    proc = verify_cli(ws.home)
    assert proc.returncode == 1 and "line 3" in proc.stdout and "event 3: the local line differs" in proc.stdout


def test_a_removed_line(ws):
    new = lines(ws)
    del new[3]
    write(ws, new)
    found = problems(ws)
    assert [seq for seq, _ in found] == [4, 5, 6]
    assert "differs" in found[0][1] and found[-1][1].startswith("event 6 in the mirror but not in the local log")
    proc = verify_cli(ws.home)
    assert proc.returncode == 1 and "event 4: the local line differs" in proc.stdout


def test_an_inserted_line(ws):
    new = lines(ws)
    forged = {**json.loads(new[2]), "reason": "never happened"}
    forged["hash"] = event_hash(forged)
    write(ws, new[:2] + [json.dumps(forged) + "\n"] + new[2:])
    found = problems(ws)
    assert [seq for seq, _ in found] == [3, 4, 5, 6, 7]
    assert found[-1] == (7, "event 7: not in the mirror (a line inserted locally, or written while the mirror was "
                            "down)")
    proc = verify_cli(ws.home)
    assert proc.returncode == 1 and "event 3: the local line differs" in proc.stdout


def test_a_reordered_pair(ws):
    new = lines(ws)
    new[1], new[2] = new[2], new[1]
    write(ws, new)
    assert [seq for seq, _ in problems(ws)] == [2, 3]
    proc = verify_cli(ws.home)
    assert proc.returncode == 1 and "event 2: the local line differs" in proc.stdout


def test_a_consistent_rewrite_of_the_whole_file(ws):
    events = ws.log.events()
    events[1]["reason"] = "nothing to see"
    write(ws, rechain(events))
    assert ws.log.verify().ok, "the chain alone is fooled"
    assert [seq for seq, _ in problems(ws)] == [2, 3, 4, 5, 6], "every re-hashed event differs from its mirror"
    proc = verify_cli(ws.home)
    assert proc.returncode == 1 and "event 2: the local line differs" in proc.stdout


def test_a_truncated_tail(ws):
    write(ws, lines(ws)[:4])
    assert ws.log.verify().ok, "a clean cut looks whole to the chain"
    assert problems(ws) == [(5, "events 5 to 6 in the mirror but not in the local log, which ends at 4 (lines cut "
                                "from the end or removed)")]
    proc = verify_cli(ws.home)
    assert proc.returncode == 1 and "events 5 to 6 in the mirror but not in the local log" in proc.stdout


# -- attacks on the mirror itself -----------------------------------------------------------------------------------
def test_a_second_version_on_an_event_key_is_found(ws, s3, bucket):
    forged = {**ws.log.events()[2], "actor": "mallory"}
    s3.put_object(Bucket=f"{bucket}-log", Key=key(3), Body=json.dumps(forged).encode())
    found = problems(ws)
    assert [seq for seq, _ in found] == [3, 3], "the bucket's default retention locked the forged version too"
    assert "event 3: the mirror holds 2 versions and 0 delete markers" in found[0][1]
    assert "event 3: the local line differs from mirror version(s)" in found[1][1]
    proc = verify_cli(ws.home)
    assert proc.returncode == 1 and "event 3: the mirror holds 2 versions" in proc.stdout


def test_a_version_without_retention_is_found(env, s3, tmp_path, monkeypatch):
    locked = f"memgov-nodefault-{uuid.uuid4().hex[:8]}"  # Object Lock on, but no default retention
    s3.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
    monkeypatch.setenv("MEMGOV_LOG_MIRROR", f"s3://{locked}/prod")
    ws = Workspace.open(tmp_path / "home")
    ws.log.append("ops", "note", "x")
    sneaked = s3.put_object(Bucket=locked, Key="prod/changelog/00000001.json",
                            Body=ws.log.path.read_bytes().strip())["VersionId"]
    found = problems(ws)
    assert [seq for seq, _ in found] == [1, 1]
    assert found[1] == (1, f"event 1: mirror version(s) {sneaked} not under COMPLIANCE retention")


def test_an_identical_copy_or_a_delete_marker_is_found_too(ws, s3, bucket):
    same = s3.get_object(Bucket=f"{bucket}-log", Key=key(2))["Body"].read()
    s3.put_object(Bucket=f"{bucket}-log", Key=key(2), Body=same)
    s3.delete_object(Bucket=f"{bucket}-log", Key=key(5))  # no version id: hides the object behind a marker
    found = problems(ws)
    assert found == [(2, "event 2: the mirror holds 2 versions and 0 delete markers of it where one version is "
                         "written (overwritten or deleted in the mirror)"),
                     (5, "event 5: the mirror holds 1 versions and 1 delete markers of it where one version is "
                         "written (overwritten or deleted in the mirror)")]


def test_rewriting_both_the_log_and_the_mirror_leaves_the_locked_originals(ws, s3, bucket):
    events = ws.log.events()
    events[0]["actor"] = "nobody"
    write(ws, rechain(events))
    for seq, line in enumerate(lines(ws), start=1):  # the attacker also puts the new lines as new versions
        s3.put_object(Bucket=f"{bucket}-log", Key=key(seq), Body=line.strip().encode())
    found = problems(ws)
    overwritten = [seq for seq, text in found if "the mirror holds 2 versions and 0 delete markers" in text]
    differing = [seq for seq, text in found if "the local line differs from mirror version(s)" in text]
    assert overwritten == differing == list(range(1, N_EVENTS + 1)), "each locked original still names the rewrite"


def test_a_locked_version_cannot_be_deleted(ws, s3, bucket):
    # moto enforces COMPLIANCE retention on versioned deletes, so the refusal itself is tested here.
    version = s3.list_object_versions(Bucket=f"{bucket}-log", Prefix=key(4))["Versions"][0]["VersionId"]
    for extra in ({}, {"BypassGovernanceRetention": True}):
        with pytest.raises(ClientError) as err:
            s3.delete_object(Bucket=f"{bucket}-log", Key=key(4), VersionId=version, **extra)
        assert err.value.response["Error"]["Code"] == "AccessDenied"
    assert problems(ws) == []


# -- the mirror unreachable or unfit ----------------------------------------------------------------------------------
def test_an_unreachable_mirror_is_said_and_exits_non_zero(env, tmp_path, monkeypatch):
    home = tmp_path / "home"
    Workspace.open(home).log.append("ops", "note", "before the mirror was configured")
    monkeypatch.setenv("MEMGOV_LOG_MIRROR", "s3://memgov-log/prod")
    monkeypatch.setenv("MEMGOV_S3_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    proc = verify_cli(home)
    assert proc.returncode == 2, proc.stdout
    assert "change-log mirror s3://memgov-log/prod is unreachable" in proc.stdout
    assert "the mirror was not checked" in proc.stdout


def test_a_missing_mirror_bucket_is_said_with_the_fix(env, tmp_path, monkeypatch):
    home = tmp_path / "home"
    Workspace.open(home).log.append("ops", "note", "x")
    monkeypatch.setenv("MEMGOV_LOG_MIRROR", f"s3://memgov-missing-{uuid.uuid4().hex[:8]}/prod")
    proc = verify_cli(home)
    assert proc.returncode == 2 and "unreachable" in proc.stdout and "create_bucket.py" in proc.stdout


def test_a_bucket_without_object_lock_is_refused_then_sync_backfills(env, s3, tmp_path, monkeypatch):
    plain = f"memgov-plain-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=plain)
    monkeypatch.setenv("MEMGOV_LOG_MIRROR", f"s3://{plain}/prod")
    ws = Workspace.open(tmp_path / "home")
    with pytest.raises(MirrorUnavailable, match="event 1 is in the local log but not in the mirror.*Object Lock"):
        ws.log.append("ops", "note", "x")
    locked = f"memgov-locked-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=locked, ObjectLockEnabledForBucket=True)
    monkeypatch.setenv("MEMGOV_LOG_MIRROR", f"s3://{locked}/prod")
    fixed = Workspace.open(ws.home).log
    assert fixed.sync_mirror() == 1 and fixed.verify_mirror().ok
    assert s3.head_object(Bucket=locked, Key="prod/changelog/00000001.json")["ObjectLockMode"] == "COMPLIANCE"


# -- many writers: the mirror as the primary copy ---------------------------------------------------------------------
POD_SCRIPT = """
import sys, time
from pathlib import Path
from pipelines.deployment.workspace import Workspace
ws = Workspace.open(sys.argv[1])
ws.log  # opened (and the mirror client made) before the start signal, so the writers race from the first event
(Path(sys.argv[1]) / "ready").touch()
while not (Path(sys.argv[1]).parent / "start").exists():
    time.sleep(0.01)
for j in range(int(sys.argv[3])):
    ws.log.append("system:" + sys.argv[2], "test.appended", f"{sys.argv[2]}-{j}")
print(ws.log.races_lost)
"""


def test_writers_on_separate_disks_share_one_chain_through_the_mirror(bucket, tmp_path, monkeypatch):
    """Run pods have no shared disk: each appends through its own empty home, claiming the next sequence number in
    the mirror with a conditional write. Every event lands exactly once, in one chain every pod can verify."""
    monkeypatch.setenv("MEMGOV_LOG_PRIMARY", "mirror")
    pods, per_pod = 4, 12
    procs = [subprocess.Popen([sys.executable, "-c", POD_SCRIPT, str(tmp_path / f"pod{i}"), f"pod{i}", str(per_pod)],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(pods)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"pod{i}" / "ready").exists() for i in range(pods)) and time.monotonic() < deadline:
        time.sleep(0.05)
    (tmp_path / "start").touch()
    lost = 0
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        lost += int(out.split()[-1])
    assert lost > 0, "the writers never raced for a sequence number"

    reader = Workspace.open(tmp_path / "new-pod")  # a pod started after the fact begins from the mirror
    events = reader.log.events()
    assert [e["seq"] for e in events] == list(range(1, pods * per_pod + 1))
    objects = [e["object"] for e in events]
    assert sorted(objects) == sorted(f"pod{i}-{j}" for i in range(pods) for j in range(per_pod))
    assert reader.log.verify().ok and reader.log.verify_mirror().ok
    for i in range(pods):  # each writer's cache is the same chain once it has caught up
        pod = Workspace.open(tmp_path / f"pod{i}")
        assert [e["hash"] for e in pod.log.events()] == [e["hash"] for e in events]


def test_a_mirror_event_that_does_not_chain_on_is_refused_not_cached(bucket, s3, tmp_path, monkeypatch):
    monkeypatch.setenv("MEMGOV_LOG_PRIMARY", "mirror")
    ws = Workspace.open(tmp_path / "pod")
    ws.log.append("alice", "test.appended", "one")
    forged = {"seq": 2, "time": "2030-01-01T00:00:00+00:00", "actor": "mallory", "action": "release.promoted",
              "object": "r0009", "reason": "", "run_id": None, "details": {}, "prev_hash": "f" * 64}
    forged["hash"] = event_hash(forged)
    s3.put_object(Bucket=f"{bucket}-log", Key="deploy/changelog/00000002.json", Body=json.dumps(forged).encode())
    fresh = Workspace.open(tmp_path / "other-pod")
    with pytest.raises(RuntimeError, match="does not chain onto event 1"):
        fresh.log.append("bob", "test.appended", "two")
    verdict = fresh.log.verify()
    assert not verdict.ok and "does not chain onto event 1" in verdict.problem
    cached = (tmp_path / "other-pod" / "changelog.jsonl").read_text().splitlines()
    assert [json.loads(line)["object"] for line in cached] == ["one"], "nothing unchained is cached"


def test_the_mirror_as_primary_needs_a_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMGOV_LOG_PRIMARY", "mirror")
    monkeypatch.delenv("MEMGOV_STORE", raising=False)
    monkeypatch.delenv("MEMGOV_LOG_MIRROR", raising=False)
    with pytest.raises(ValueError, match="MEMGOV_LOG_PRIMARY=mirror needs a mirror"):
        Workspace.open(tmp_path / "home").log.append("alice", "test.appended", "x")
