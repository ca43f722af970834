"""Approval rules of decide_release on a bare workspace: no model is loaded, promotion itself is stubbed out.

The promotion path (compare-and-swap, canary, rollback) runs for real in tests/integration/test_governance.py.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipelines.core.digests import canonical_json
from pipelines.deployment.workspace import Workspace
from pipelines.governance import approvals
from pipelines.governance.approvals import ApprovalRefused, approvers_needed, decide_release, requesters
from policies import load_policy, merge_overrides

POLICY = load_policy("default")
LIMIT = POLICY.approval.two_approvers_above_facts
EXPIRY = timedelta(hours=POLICY.approval.expiry_hours)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return Workspace.open(tmp_path / "home", store_url=str(tmp_path / "store"),
                          requests_url=f"sqlite:///{tmp_path / 'requests.db'}")


@pytest.fixture
def promotions(monkeypatch) -> list[str]:
    """Record promotions instead of loading weights for the canary."""
    calls: list[str] = []

    def fake(ws, policy, release_id, actor, reason, run_id=None):
        calls.append(release_id)
        return {"release_id": release_id, "status": "champion"}

    monkeypatch.setattr(approvals, "promote_with_canary", fake)
    return calls


def _card(ws: Workspace, tmp: Path, new_facts: int, forget: int = 0) -> str:
    folder = tmp / f"card-{new_facts}-{forget}"
    folder.mkdir(exist_ok=True)
    card = {"set_sizes": {"new_facts": new_facts, "forget": forget}, "metrics": {"retention": 0.99},
            "decision": {"passed": True, "verdicts": []}}
    (folder / "card.json").write_text(json.dumps(card))
    return ws.store.put_dir(folder)


def _candidate(ws: Workspace, tmp: Path, new_facts: int = 10, forget: int = 0, created_by: str = "pipeline:cycle",
               honoured: tuple[str, ...] = ()) -> str:
    model = ws.store.put_bytes(canonical_json({"kind": "memgov.dir/v1", "files": [], "tag": "weights"}))
    fields = {"base_model": "tiny", "model": model, "evaluation_card": _card(ws, tmp, new_facts, forget),
              "tombstones_honoured": list(honoured), "cycle": "test"}
    return ws.registry.create(fields, created_by, "test candidate").release_id


def _created(ws: Workspace, rid: str) -> datetime:
    return datetime.fromisoformat(ws.registry.get(rid).created_at)


def _file_request(ws: Workspace, request_id: str, requester: str) -> None:
    ws.requests.submit({"request_id": request_id, "requester": requester, "selector": {"subject_ids": ["s-1"]},
                        "reason": "erasure", "legal_basis": "gdpr_art17",
                        "deadline": datetime.now(UTC) + timedelta(days=30)})


# -- pure rules ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("new_facts", "forget", "needed"), [
    (0, 0, 1), (LIMIT, 0, 1), (LIMIT + 1, 0, 2), (LIMIT - 10, 11, 2), (0, LIMIT, 1), (0, LIMIT + 1, 2),
])
def test_approvers_needed_counts_new_and_forgotten_facts_against_the_limit(new_facts, forget, needed):
    assert approvers_needed(POLICY, {"set_sizes": {"new_facts": new_facts, "forget": forget}}) == needed


def test_approvers_needed_follows_the_policy_threshold():
    strict = merge_overrides(POLICY, {"approval": {"two_approvers_above_facts": 0}}, "strict.yaml")
    assert approvers_needed(strict, {"set_sizes": {"new_facts": 1}}) == 2
    assert approvers_needed(strict, {"set_sizes": {"new_facts": 0}}) == 1
    assert approvers_needed(POLICY, {}) == 1, "a release without a card needs the ordinary single approval"


def test_requesters_are_the_creator_and_the_requesters_of_honoured_forget_requests(ws, tmp_path):
    _file_request(ws, "req-1", "carol")
    rid = _candidate(ws, tmp_path, created_by="dave", honoured=("req-1", "req-unknown"))
    assert requesters(ws, ws.registry.get(rid)) == {"dave", "carol"}


# -- decide_release refusals ----------------------------------------------------------------------------------------
def test_role_outside_the_policy_is_refused_and_nothing_is_recorded(ws, tmp_path, promotions):
    rid = _candidate(ws, tmp_path)
    with pytest.raises(ApprovalRefused) as err:
        decide_release(ws, POLICY, rid, "approve", "erin", "intern", "looks fine")
    assert "intern" in str(err.value)
    for role in POLICY.approval.roles:
        assert role in str(err.value), "the refusal must name the roles that are allowed"
    assert ws.registry.get(rid).approvals == []
    assert ws.registry.status(rid) == "candidate"
    assert promotions == []


def test_a_role_refusal_applies_to_rejections_too(ws, tmp_path):
    rid = _candidate(ws, tmp_path)
    with pytest.raises(ApprovalRefused, match="allowed roles"):
        decide_release(ws, POLICY, rid, "reject", "erin", "intern", "no")
    assert ws.registry.status(rid) == "candidate"


@pytest.mark.parametrize(("decision", "approver", "reason"), [
    ("merge", "alice", "ok"), ("approve", "  ", "ok"), ("approve", "alice", ""),
])
def test_malformed_decisions_are_refused(ws, tmp_path, decision, approver, reason):
    rid = _candidate(ws, tmp_path)
    with pytest.raises(ApprovalRefused):
        decide_release(ws, POLICY, rid, decision, approver, "ml-lead", reason)
    assert ws.registry.get(rid).approvals == []


def test_creator_cannot_approve_own_release(ws, tmp_path, promotions):
    rid = _candidate(ws, tmp_path, created_by="alice")
    with pytest.raises(ApprovalRefused, match="alice requested a change"):
        decide_release(ws, POLICY, rid, "approve", "alice", "ml-lead", "mine, but fine")
    assert ws.registry.get(rid).approvals == [] and promotions == []
    decide_release(ws, POLICY, rid, "approve", "bob", "ml-lead", "reviewed")
    assert promotions == [rid], "a different approver may approve it"


def test_requester_of_an_honoured_forget_request_cannot_approve(ws, tmp_path, promotions):
    _file_request(ws, "req-7", "carol")
    rid = _candidate(ws, tmp_path, honoured=("req-7",))
    with pytest.raises(ApprovalRefused, match="carol"):
        decide_release(ws, POLICY, rid, "approve", "carol", "governance", "my request is honoured")
    assert promotions == []


def test_self_approval_allowed_when_the_policy_says_so(ws, tmp_path, promotions):
    lax = merge_overrides(POLICY, {"approval": {"forbid_self_approval": False}}, "lax.yaml")
    rid = _candidate(ws, tmp_path, created_by="alice")
    decide_release(ws, lax, rid, "approve", "alice", "ml-lead", "ok")
    assert promotions == [rid]


def test_large_change_waits_for_a_second_distinct_approver(ws, tmp_path, promotions):
    rid = _candidate(ws, tmp_path, new_facts=LIMIT + 1)
    first = decide_release(ws, POLICY, rid, "approve", "alice", "ml-lead", "card reviewed")
    assert first["status"] == "candidate" and "1 more distinct approver" in first["waiting_for"]
    again = decide_release(ws, POLICY, rid, "approve", "alice", "governance", "still fine")
    assert again["status"] == "candidate", "the same approver twice must not count as two"
    assert ws.registry.status(rid) == "candidate" and promotions == []
    decide_release(ws, POLICY, rid, "approve", "bob", "governance", "agreed")
    assert promotions == [rid]
    assert ws.registry.status(rid) == "approved"
    assert [a["approver"] for a in ws.registry.get(rid).approvals] == ["alice", "alice", "bob"]


def test_small_change_needs_one_approver(ws, tmp_path, promotions):
    rid = _candidate(ws, tmp_path, new_facts=LIMIT)
    decide_release(ws, POLICY, rid, "approve", "alice", "ml-lead", "ok")
    assert promotions == [rid]


def test_a_padded_name_is_the_same_person(ws, tmp_path, promotions):
    rid = _candidate(ws, tmp_path, new_facts=LIMIT + 1, created_by="carol")
    decide_release(ws, POLICY, rid, "approve", "alice", "ml-lead", "ok")
    again = decide_release(ws, POLICY, rid, "approve", " alice ", "ml-lead", "ok again")
    assert again["status"] == "candidate" and promotions == [], "' alice ' must not count as a second approver"
    with pytest.raises(ApprovalRefused, match="carol requested a change"):
        decide_release(ws, POLICY, rid, "approve", "carol\t", "governance", "padding must not hide the creator")


def test_approval_after_the_window_is_refused(ws, tmp_path, promotions):
    rid = _candidate(ws, tmp_path, new_facts=LIMIT + 1)
    created = _created(ws, rid)
    inside = decide_release(ws, POLICY, rid, "approve", "alice", "ml-lead", "ok", now=created + EXPIRY - timedelta(minutes=1))
    assert inside["status"] == "candidate"
    with pytest.raises(ApprovalRefused, match="expired"):
        decide_release(ws, POLICY, rid, "approve", "bob", "ml-lead", "late", now=created + EXPIRY + timedelta(seconds=1))
    assert ws.registry.status(rid) == "candidate" and promotions == []
    assert [a["approver"] for a in ws.registry.get(rid).approvals] == ["alice"]


def test_an_expired_candidate_can_still_be_rejected(ws, tmp_path):
    rid = _candidate(ws, tmp_path)
    out = decide_release(ws, POLICY, rid, "reject", "alice", "ml-lead", "stale", now=_created(ws, rid) + 10 * EXPIRY)
    assert out["status"] == "rejected"


def test_a_gate_rejected_release_cannot_be_approved(ws, tmp_path, promotions):
    rid = _candidate(ws, tmp_path)
    ws.registry.set_status(rid, "rejected", "system:gates", "retention below minimum")
    with pytest.raises(ApprovalRefused, match="failed its gates"):
        decide_release(ws, POLICY, rid, "approve", "alice", "governance", "override")
    assert ws.registry.status(rid) == "rejected" and promotions == []


def test_reject_marks_rejected_keeps_champion_and_closes_the_decision(ws, tmp_path, promotions):
    champ = _candidate(ws, tmp_path)
    ws.registry.set_status(champ, "approved", "bob", "ok")
    assert ws.registry.promote(champ, "bob", "first", expected=None)
    rid = _candidate(ws, tmp_path)
    out = decide_release(ws, POLICY, rid, "reject", "alice", "governance", "card shows regressions")
    assert out == {"release_id": rid, "status": "rejected", "champion": champ}
    assert ws.registry.status(rid) == "rejected" and ws.registry.champion() == champ
    events = [e for e in ws.log.events() if e["object"] == rid and e["action"] == "release.rejected"]
    assert len(events) == 1 and events[0]["actor"] == "alice" and events[0]["reason"] == "card shows regressions"
    with pytest.raises(ApprovalRefused, match="'rejected'"):
        decide_release(ws, POLICY, rid, "approve", "bob", "ml-lead", "changed my mind")
    assert promotions == []


def test_case_and_look_alike_letters_do_not_make_another_person(ws, tmp_path, promotions):
    _file_request(ws, "req-8", "privacy-office")
    rid = _candidate(ws, tmp_path, new_facts=LIMIT + 1, honoured=("req-8",))
    with pytest.raises(ApprovalRefused, match="Privacy-Office requested a change"):
        decide_release(ws, POLICY, rid, "approve", "Privacy-Office", "governance", "not my own request, surely")
    decide_release(ws, POLICY, rid, "approve", "alice", "ml-lead", "ok")
    again = decide_release(ws, POLICY, rid, "approve", "ＡＬＩＣＥ", "governance", "full-width letters")
    assert again["status"] == "candidate" and promotions == [], "'ＡＬＩＣＥ' is alice a second time"
