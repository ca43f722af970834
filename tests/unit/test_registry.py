"""Release registry: lifecycle, illegal transitions, the champion compare-and-swap race, rollback, tainting."""

from __future__ import annotations

import json
import threading
import uuid
from unittest.mock import ANY

import boto3
import pytest
from support_s3 import CREDS, s3_server

from pipelines.core.digests import canonical_json
from pipelines.deployment.registry import CHAMPION_KEY, Registry
from pipelines.state.ledger import ChangeLog
from pipelines.state.store import LocalStore, open_store


@pytest.fixture(scope="module")
def s3_endpoint():
    with s3_server() as endpoint:
        yield endpoint


def _make_registry(kind: str, tmp_path, request) -> Registry:
    if kind == "local":
        store = LocalStore(tmp_path / "store")
    else:
        endpoint = request.getfixturevalue("s3_endpoint")
        bucket = f"memgov-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=endpoint, **CREDS).create_bucket(Bucket=bucket)
        store = open_store(f"s3://{bucket}/reg", endpoint_url=endpoint, **CREDS)
    return Registry(store, ChangeLog(tmp_path / "changes.jsonl"))


@pytest.fixture
def reg(tmp_path, request) -> Registry:
    return _make_registry("local", tmp_path, request)


@pytest.fixture(params=["local", "s3"])
def any_reg(tmp_path, request) -> Registry:
    return _make_registry(request.param, tmp_path, request)


def _weights(reg: Registry, tag: str = "w") -> str:
    return reg.store.put_bytes(canonical_json({"kind": "memgov.dir/v1", "files": [], "tag": tag}))


def _new(reg: Registry, parent=None, rows=(), subjects=(), honoured=(), approve=False) -> str:
    fields = {
        "parent": parent,
        "base_model": "tiny-gpt2",
        "model": _weights(reg),
        "lineage": {"row_ids": list(rows), "subject_ids": list(subjects)},
        "tombstones_honoured": list(honoured),
        "cycle": "c1",
    }
    rid = reg.create(fields, actor="builder", reason="cycle output").release_id
    if approve:
        reg.set_status(rid, "approved", actor="reviewer", reason="gates passed")
    return rid


def _actions(reg: Registry) -> list[tuple[str, str]]:
    return [(e["action"], e["object"]) for e in reg.log.events()]


def test_create_stores_an_immutable_manifest(reg):
    r1 = _new(reg, rows=["a", "b"], subjects=["s1"], honoured=["req-0"])
    r2 = _new(reg, parent=r1, rows=["c"], subjects=["s2"])
    assert (r1, r2) == ("r0001", "r0002")
    rel = reg.get(r2)
    assert rel.status == "candidate" and rel.parent == r1 and rel.created_by == "builder"
    # cumulative from the parent, and hashed: a manifest names no id in clear
    assert rel.lineage == {"row_ids": sorted(reg.lineage_digests(["a", "b", "c"])),
                           "subject_ids": sorted(reg.lineage_digests(["s1", "s2"]))}
    assert reg.in_lineage(rel, "row_ids", "a") and not reg.in_lineage(rel, "row_ids", "z")
    assert rel.tombstones_honoured == ["req-0"]
    blob = reg.store.get_bytes(rel.manifest_digest)
    assert json.loads(blob) == rel.manifest and blob == canonical_json(rel.manifest)
    reg.set_status(r2, "approved", "reviewer", "ok")
    assert reg.get(r2).manifest_digest == rel.manifest_digest  # deciding never rewrites the manifest
    assert _actions(reg) == [("release.created", r1), ("release.created", r2), ("release.approved", r2)]
    assert [r.release_id for r in reg.list()] == [r1, r2]


def test_create_rejects_bad_manifests(reg):
    good = {"base_model": "m", "model": _weights(reg)}
    with pytest.raises(ValueError, match=r"colour: unknown field \(fields are: parent, base_model"):
        reg.create({**good, "colour": "red"}, "a", "r")
    with pytest.raises(ValueError, match="model: .*sha256"):
        reg.create({**good, "model": "weights.bin"}, "a", "r")
    with pytest.raises(ValueError, match="not in .*put_dir"):
        reg.create({**good, "model": "sha256:" + "1" * 64}, "a", "r")
    with pytest.raises(ValueError, match="base_model"):
        reg.create({**good, "base_model": " "}, "a", "r")
    with pytest.raises(KeyError, match="r0042"):
        reg.create({**good, "parent": "r0042"}, "a", "r")
    assert reg.list() == [] and reg.log.events() == []


def test_lifecycle_promote_and_retire(reg):
    r1 = _new(reg, approve=True)
    assert reg.champion() is None
    assert reg.promote(r1, "ops", "first release")
    r2 = _new(reg, parent=r1, approve=True)
    assert reg.promote(r2, "ops", "better")
    assert reg.champion() == r2
    assert (reg.status(r1), reg.status(r2)) == ("retired", "champion")
    assert [h["to"] for h in reg.get(r1).history] == ["approved", "champion", "retired"]
    r3 = _new(reg)
    reg.set_status(r3, "rejected", "reviewer", "worse on utility")
    promoted = [e for e in reg.log.events() if e["action"] == "release.promoted"]
    assert [(e["object"], e["details"]["previous"]) for e in promoted] == [(r1, None), (r2, r1)]
    assert len(reg.log.events()) == 3 + 2 + 2 * 2 + 1  # created x3, approved x2, promoted x2 (intent + outcome), rejected
    assert reg.log.verify().ok


def test_illegal_transitions_name_both_states(reg):
    r1 = _new(reg)
    with pytest.raises(ValueError, match="from 'candidate' to 'retired'"):
        reg.set_status(r1, "retired", "a", "r")
    with pytest.raises(ValueError, match="promote"):
        reg.set_status(r1, "champion", "a", "r")
    with pytest.raises(ValueError, match="unknown status 'shipped'"):
        reg.set_status(r1, "shipped", "a", "r")
    with pytest.raises(ValueError, match="only an approved release"):
        reg.promote(r1, "a", "r")
    reg.set_status(r1, "approved", "a", "r")
    reg.promote(r1, "a", "r")
    with pytest.raises(ValueError, match="from 'champion' to 'retired'"):
        reg.set_status(r1, "retired", "a", "r")
    reg.set_status(r1, "tainted", "a", "r")
    with pytest.raises(ValueError, match=r"from 'tainted' to 'approved'.*none \(final\)"):
        reg.set_status(r1, "approved", "a", "r")
    with pytest.raises(KeyError):
        reg.status("r9999")
    assert [e["action"] for e in reg.log.events()] == [
        "release.created",
        "release.approved",
        "release.promotion_started",
        "release.promoted",
        "release.tainted",
    ]


def test_promote_with_stale_expectation_changes_nothing(reg):
    r1, r2 = _new(reg, approve=True), _new(reg, approve=True)
    reg.promote(r1, "ops", "first")
    n = len(reg.log.events())
    assert reg.promote(r2, "ops", "second", expected=None) is False
    assert reg.champion() == r1 and reg.status(r2) == "approved" and len(reg.log.events()) == n


def test_concurrent_promotions_exactly_one_wins(any_reg):
    reg = any_reg
    r1 = _new(reg, approve=True)
    reg.promote(r1, "ops", "first")
    r2, r3 = _new(reg, approve=True), _new(reg, approve=True)
    start = threading.Barrier(2)
    won: dict[str, bool] = {}

    def promote(rid: str) -> None:
        start.wait()
        won[rid] = reg.promote(rid, "ops", "race", expected=r1)

    threads = [threading.Thread(target=promote, args=(rid,)) for rid in (r2, r3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    winners = [rid for rid, ok in won.items() if ok]
    assert len(winners) == 1
    loser = ({r2, r3} - set(winners)).pop()
    assert reg.champion() == winners[0]
    assert (reg.status(winners[0]), reg.status(loser), reg.status(r1)) == ("champion", "approved", "retired")
    assert [e["object"] for e in reg.log.events() if e["action"] == "release.promoted"] == [r1, winners[0]]


def test_concurrent_creates_get_distinct_ids(any_reg):
    reg = any_reg
    model = _weights(reg)
    ids: list[str] = []

    def create() -> None:
        for _ in range(3):
            ids.append(reg.create({"base_model": "m", "model": model}, "a", "r").release_id)

    threads = [threading.Thread(target=create) for _ in range(3)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(ids) == [f"r{i:04d}" for i in range(1, 10)]


def test_pointer_is_the_truth_after_a_crash_between_steps(reg):
    r1, r2 = _new(reg, approve=True), _new(reg, approve=True)
    reg.promote(r1, "ops", "first")
    old = reg.store.read_text(CHAMPION_KEY)
    moved = json.dumps({**json.loads(old), "release": r2, "previous": r1, "move": 2})
    assert reg.store.compare_and_swap(CHAMPION_KEY, old, moved)  # the records were never updated
    assert (reg.status(r1), reg.status(r2)) == ("retired", "champion")
    assert [r.status for r in reg.list()] == ["retired", "champion"]


def test_rollback(reg):
    r1 = _new(reg, approve=True)
    reg.promote(r1, "ops", "first")
    r2 = _new(reg, parent=r1, approve=True)
    reg.promote(r2, "ops", "second")
    assert reg.rollback(r1, "oncall", "regression in r0002")
    assert reg.champion() == r1 and (reg.status(r1), reg.status(r2)) == ("champion", "retired")
    event = reg.log.events()[-1]
    assert (event["action"], event["object"], event["actor"], event["details"]) == (
        "release.rolled_back",
        r1,
        "oncall",
        {"previous": r2, "pointer": ANY, "records": {r1: ANY, r2: ANY}},  # the pointer's and both records' digests
    )


def test_rollback_refusals(reg):
    champ = _new(reg, approve=True)
    reg.promote(champ, "ops", "first")
    cand = _new(reg)
    rejected = _new(reg)
    reg.set_status(rejected, "rejected", "rev", "bad")
    old = _new(reg, approve=True, rows=["row-7"])
    reg.promote(old, "ops", "x")
    reg.rollback(champ, "ops", "back")
    reg.mark_tainted({"row-7"}, set(), "req-9", "ops")
    n = len(reg.log.events())
    for rid, why in [
        (old, "tainted by forget request.*req-9.*re-scrub"),
        (rejected, "rejected at review"),
        (cand, "never approved"),
        (champ, "already the champion"),
    ]:
        with pytest.raises(ValueError, match=f"cannot roll back to release {rid}: .*{why}"):
            reg.rollback(rid, "ops", "try")
    assert len(reg.log.events()) == n and reg.champion() == champ


def test_mark_tainted(reg):
    a = _new(reg, rows=["r1", "r2"], subjects=["s1"], approve=True)
    reg.promote(a, "ops", "first")
    b = _new(reg, parent=a, rows=["r3"], honoured=["req-1"])  # already scrubbed for req-1
    c = _new(reg, rows=["r9"], subjects=["s9"])
    d = _new(reg, rows=["r5"], subjects=["s1"])
    assert reg.mark_tainted({"r2"}, {"s1"}, "req-1", "unlearn-bot") == [a, d]
    assert reg.champion() == a and reg.status(a) == "tainted"  # the caller decides what serves next
    assert (reg.status(b), reg.status(c)) == ("candidate", "candidate")
    assert reg.mark_tainted({"r2"}, {"s1"}, "req-1", "unlearn-bot") == []  # idempotent
    assert reg.mark_tainted({"r9"}, set(), "req-2", "unlearn-bot") == [c]
    tainted = [e for e in reg.log.events() if e["action"] == "release.tainted"]
    assert [e["object"] for e in tainted] == [a, d, c]
    assert tainted[0]["details"] == {"request_id": "req-1", "matched_rows": 1, "matched_subjects": 1, "was": "champion",
                                     "records": {a: ANY}}
    assert "r2" not in json.dumps(tainted) and "s1" not in json.dumps(tainted)  # counts, never the ids themselves
    assert reg.get(a).taint[0]["request_id"] == "req-1"
    fresh = _new(reg, rows=["r7"], honoured=["req-1"], approve=True)
    assert reg.promote(fresh, "ops", "replace the tainted champion")
    assert (reg.status(fresh), reg.status(a)) == ("champion", "tainted")  # tainted stays tainted, not retired


def test_approvals(reg):
    r1 = _new(reg)
    rel = reg.add_approval(r1, "bob", "ml-lead", "approve", "metrics fine")
    assert rel.approvals[0]["approver"] == "bob" and rel.approvals[0]["time"].endswith("+00:00")
    assert reg.status(r1) == "candidate"  # recording a decision is not approving: policy decides
    with pytest.raises(ValueError, match="decision 'yes'"):
        reg.add_approval(r1, "bob", "ml-lead", "yes", "x")
    with pytest.raises(ValueError, match="reason"):
        reg.add_approval(r1, "bob", "ml-lead", "approve", "")
    reg.set_status(r1, "rejected", "carol", "no")
    with pytest.raises(ValueError, match="only for candidates"):
        reg.add_approval(r1, "dan", "security", "approve", "late")
    assert reg.log.events()[1]["action"] == "release.approval_recorded"


def test_a_withdrawn_release_is_never_served_again(reg):
    first = _new(reg, approve=True)
    reg.promote(first, "ops", "first")
    bad = _new(reg, parent=first, approve=True)
    reg.promote(bad, "ops", "second")
    reg.rollback(first, "system:canary", "canary failed")
    reg.set_status(bad, "withdrawn", "system:canary", "canary failed")
    with pytest.raises(ValueError, match="failed its canary"):
        reg.rollback(bad, "ops", "try again")
    with pytest.raises(ValueError, match="only an approved release can be promoted"):
        reg.promote(bad, "ops", "try again")
    assert reg.champion() == first and reg.status(bad) == "withdrawn"


def test_waive_returns_only_a_gate_rejection_to_candidate(reg):
    by_gates, by_reviewer = _new(reg), _new(reg)
    reg.set_status(by_gates, "rejected", "system:gates", "failed gates: retention")
    reg.set_status(by_reviewer, "rejected", "bob", "not now")
    with pytest.raises(ValueError, match="rejected by a reviewer"):
        reg.waive(by_reviewer, "erin", "governance", "override", ["retention"])
    with pytest.raises(ValueError, match="name the failed gate"):
        reg.waive(by_gates, "erin", "governance", "override", [])
    release = reg.waive(by_gates, "erin", "governance", "known-bad batch, serve for triage", ["retention"])
    assert release.status == "candidate" and release.waivers[0]["gates"] == ["retention"]
    assert release.history[-1]["from"] == "rejected" and release.history[-1]["actor"] == "erin"
    assert ("gates.waived", by_gates) in _actions(reg)
    with pytest.raises(ValueError, match="it is 'candidate'"):
        reg.waive(by_gates, "erin", "governance", "twice", ["retention"])
    assert reg.log.verify().ok
