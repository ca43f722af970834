"""Governance on a real deployment: approvals, the promotion race, the canary and rollback, seen through the CLI
and the engine functions on a copy of the demo deployment.

The demo leaves r0001 (base, tainted), r0002 (cycle 1, tainted), r0003 (cycle 2, champion) and r0004 (cycle 3,
rejected by its gates). Candidates that wait for a human are registered here directly: they reuse the champion's
weights and index snapshot and carry a small evaluation card, so no training runs in these tests.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support_governance import POLICY, actions_on, candidate, demo_ws, flat, memgov
from support_keys import keyholder

from pipelines.deployment.workspace import Workspace
from pipelines.governance.approvals import ApprovalRefused, decide_release, waive_gates
from pipelines.governance.promotion import read_card
from pipelines.governance.rollback import rollback
from policies import merge_overrides

LIMIT = POLICY.approval.two_approvers_above_facts
DEMO_FORGET = "req-demo-0001"


@pytest.fixture
def ws(demo_copy) -> Workspace:
    return demo_ws(demo_copy)


# -- approval rules -------------------------------------------------------------------------------------------------
def test_cli_refuses_a_role_the_policy_does_not_allow(ws):
    rid = candidate(ws)
    proc = memgov(ws.home, "approve", rid, "--key", keyholder(ws.home, "dave", "intern"), "--role", "intern", "--reason", "looks good")
    out = flat(proc)
    assert proc.returncode == 2, out
    assert "role 'intern' may not decide releases" in out
    assert "ml-lead" in out and "governance" in out, "the refusal must name the roles that are allowed"
    assert ws.registry.status(rid) == "candidate" and ws.registry.champion() == "r0003"
    assert "release.approval_recorded" not in actions_on(ws, rid)


def test_the_creator_of_a_release_cannot_approve_it(ws):
    rid = candidate(ws, created_by="alice")
    with pytest.raises(ApprovalRefused, match=f"alice requested a change in {rid}"):
        decide_release(ws, POLICY, rid, "approve", "alice", "ml-lead", "my own work is fine")
    assert ws.registry.get(rid).approvals == []
    assert ws.registry.status(rid) == "candidate" and ws.registry.champion() == "r0003"


def test_the_requester_of_an_honoured_forget_request_cannot_approve(ws):
    requester = ws.requests.get(DEMO_FORGET).requester
    rid = candidate(ws)  # the champion honours the demo's forget request; its child inherits that
    assert DEMO_FORGET in ws.registry.get(rid).tombstones_honoured
    with pytest.raises(ApprovalRefused, match=f"{requester} requested a change"):
        decide_release(ws, POLICY, rid, "approve", requester, "governance", "my erasure is done")
    assert ws.registry.status(rid) == "candidate" and ws.registry.champion() == "r0003"


def test_a_large_change_needs_two_distinct_approvers(ws):
    rid = candidate(ws, new_facts=LIMIT - 5, forget=6)  # 201 facts changed: above the limit
    first = decide_release(ws, POLICY, rid, "approve", "alice", "ml-lead", "card reviewed")
    assert first["status"] == "candidate" and first["champion"] == "r0003" and "waiting_for" in first
    again = decide_release(ws, POLICY, rid, "approve", "alice", "governance", "reviewed once more")
    assert again["status"] == "candidate", "one person approving twice is still one approver"
    assert ws.registry.status(rid) == "candidate" and ws.registry.champion() == "r0003"
    assert "release.promoted" not in actions_on(ws, rid)

    done = decide_release(ws, POLICY, rid, "approve", "bob", "governance", "agreed")
    assert done["status"] == "champion" and ws.registry.champion() == rid
    assert ws.registry.status("r0003") == "retired"
    assert {"release.approved", "release.promoted", "canary.passed"} <= set(actions_on(ws, rid))
    approved = [e for e in ws.log.events() if e["object"] == rid and e["action"] == "release.approved"]
    assert [e["actor"] for e in approved] == ["bob"]


def test_an_approval_after_the_window_is_refused(ws):
    rid = candidate(ws, new_facts=LIMIT + 1)
    created = datetime.fromisoformat(ws.registry.get(rid).created_at)
    window = timedelta(hours=POLICY.approval.expiry_hours)
    ok = decide_release(ws, POLICY, rid, "approve", "alice", "ml-lead", "in time", now=created + window / 2)
    assert ok["status"] == "candidate"
    with pytest.raises(ApprovalRefused, match="expired"):
        decide_release(ws, POLICY, rid, "approve", "bob", "ml-lead", "late", now=created + window + timedelta(minutes=1))
    assert [a["approver"] for a in ws.registry.get(rid).approvals] == ["alice"]
    assert ws.registry.status(rid) == "candidate" and ws.registry.champion() == "r0003"


def test_a_release_rejected_by_its_gates_cannot_be_approved(ws):
    proc = memgov(ws.home, "approve", "r0004", "--key", keyholder(ws.home, "alice", "governance"), "--role", "governance", "--reason", "override")
    out = flat(proc)
    assert proc.returncode == 2, out
    assert "'rejected'" in out and "failed its gates" in out
    assert ws.registry.status("r0004") == "rejected" and ws.registry.champion() == "r0003"


def test_cli_reject_marks_the_candidate_rejected_and_keeps_the_champion(ws):
    rid = candidate(ws)
    proc = memgov(ws.home, "reject", rid, "--key", keyholder(ws.home, "alice", "ml-lead"), "--role", "ml-lead", "--reason", "card shows drift")
    assert proc.returncode == 0, flat(proc)
    assert ws.registry.status(rid) == "rejected" and ws.registry.champion() == "r0003"
    rejected = [e for e in ws.log.events() if e["object"] == rid and e["action"] == "release.rejected"]
    assert len(rejected) == 1 and rejected[0]["actor"] == "alice" and rejected[0]["reason"] == "card shows drift"
    with pytest.raises(ApprovalRefused, match="'rejected'"):
        decide_release(ws, POLICY, rid, "approve", "bob", "ml-lead", "second opinion")


# -- promotion race -------------------------------------------------------------------------------------------------
def race(home: Path, rivals: list[str], expected: str) -> dict[str, bool | BaseException]:
    """Promote every rival at the same instant, each through its own registry handle (as separate processes would)."""
    barrier = threading.Barrier(len(rivals))
    results: dict[str, bool | BaseException] = {}

    def promote(rid: str) -> None:
        registry = Workspace.open(home).registry
        barrier.wait()
        try:
            results[rid] = registry.promote(rid, f"promoter-{rid}", "race", expected=expected)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller's assertion
            results[rid] = exc

    threads = [threading.Thread(target=promote, args=(rid,)) for rid in rivals]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_two_concurrent_promotions_from_the_same_champion_have_one_winner(ws):
    for _ in range(4):
        expected = ws.registry.champion()
        rivals = [candidate(ws), candidate(ws)]
        for rid in rivals:
            ws.registry.set_status(rid, "approved", "alice", "approved for the race")
        results = race(ws.home, rivals, expected)
        assert sorted(results.values(), key=str) == [False, True], results
        winner = next(rid for rid, won in results.items() if won is True)
        loser = next(rid for rid in rivals if rid != winner)
        assert ws.registry.champion() == winner
        assert ws.registry.status(winner) == "champion"
        assert ws.registry.status(loser) == "approved", "the loser must stay approved, not half-promoted"
        assert ws.registry.status(expected) == "retired"
        assert "release.promoted" not in actions_on(ws, loser)
        promoted = [e for e in ws.log.events() if e["action"] == "release.promoted" and e["object"] == winner]
        assert len(promoted) == 1 and promoted[0]["details"]["previous"] == expected
    champions = [r.release_id for r in ws.registry.list() if r.status == "champion"]
    assert champions == [ws.registry.champion()]
    assert ws.log.verify().ok


# -- canary ---------------------------------------------------------------------------------------------------------
def test_a_failed_canary_rolls_the_champion_back(ws):
    strict = merge_overrides(POLICY, {"evaluation": {"canary_min_recall": 1.01}}, "canary-strict.yaml")
    rid = candidate(ws)
    seq0 = ws.log.events()[-1]["seq"]
    out = decide_release(ws, strict, rid, "approve", "bob", "ml-lead", "card reviewed")
    assert out["rolled_back_to"] == "r0003" and out["canary_recall"] < 1.01
    assert ws.registry.champion() == "r0003" and ws.registry.status("r0003") == "champion"
    assert ws.registry.status(rid) != "champion"
    new = [(e["action"], e["object"], e["actor"]) for e in ws.log.events() if e["seq"] > seq0]
    promoted = new.index(("release.promoted", rid, "bob"))
    failed = next(i for i, e in enumerate(new) if e[:2] == ("canary.failed", rid))
    back = new.index(("release.rolled_back", "r0003", "system:canary"))
    assert promoted < failed < back
    assert ws.log.verify().ok


def test_a_release_that_failed_its_canary_cannot_be_rolled_back_to(ws):
    strict = merge_overrides(POLICY, {"evaluation": {"canary_min_recall": 1.01}}, "canary-strict.yaml")
    rid = candidate(ws)
    assert decide_release(ws, strict, rid, "approve", "bob", "ml-lead", "card reviewed")["rolled_back_to"] == "r0003"
    assert ws.registry.status(rid) == "withdrawn"
    with pytest.raises(ValueError, match="canary"):
        rollback(ws, POLICY, rid, "ops", "ml-lead", "try the new one again")
    assert ws.registry.champion() == "r0003"
    proc = memgov(ws.home, "rollback", "--to", rid, "--key", keyholder(ws.home, "ops", "ml-lead"), "--role", "ml-lead", "--reason", "retry")
    assert proc.returncode == 2 and "failed its canary" in flat(proc)


def test_a_failed_canary_with_a_tainted_previous_champion_reports_instead_of_raising(ws):
    ws.requests.submit({"request_id": "req-gov-0002", "requester": "privacy-office", "reason": "erasure",
                        "selector": {"subject_ids": ["subject-x"]}, "legal_basis": "gdpr_art17",
                        "deadline": datetime.now(UTC) + timedelta(days=30)})
    lineage = ws.registry.get("r0003").lineage
    rows, subjects = set(lineage["row_ids"][:1]), set(lineage["subject_ids"][:1])
    assert "r0003" in ws.registry.mark_tainted(rows, subjects, "req-gov-0002", "system:forget")
    assert ws.registry.status("r0003") == "tainted" and ws.registry.champion() == "r0003"
    rid = candidate(ws, parent="r0003", honoured=("req-gov-0002",))
    strict = merge_overrides(POLICY, {"evaluation": {"canary_min_recall": 1.01}}, "canary-strict.yaml")
    out = decide_release(ws, strict, rid, "approve", "bob", "ml-lead", "scrubbed release")
    assert out["champion"] == ws.registry.champion() == rid and out["rollback_refused"] == "r0003"
    assert "canary.failed" in actions_on(ws, rid) and "canary.rollback_refused" in actions_on(ws, rid)


def test_a_candidate_judged_against_an_earlier_champion_is_not_promoted(ws):
    first, second = candidate(ws), candidate(ws)  # both compared with r0003
    decide_release(ws, POLICY, first, "approve", "bob", "ml-lead", "card reviewed")
    assert ws.registry.champion() == first
    with pytest.raises(ApprovalRefused, match=f"{second} was judged against r0003, but the champion is now {first}"):
        decide_release(ws, POLICY, second, "approve", "carol", "governance", "card reviewed")
    proc = memgov(ws.home, "approve", second, "--key", keyholder(ws.home, "carol", "governance"), "--role", "governance", "--reason", "reviewed")
    assert proc.returncode == 2 and "re-run its cycle" in flat(proc)
    assert ws.registry.champion() == first and ws.registry.status(second) == "candidate"
    decide_release(ws, POLICY, second, "reject", "carol", "governance", "stale: judged against r0003")
    assert ws.registry.status(second) == "rejected", "a stale candidate can still be rejected"


# -- rollback -------------------------------------------------------------------------------------------------------
def test_a_rollback_needs_a_role_the_policy_names(ws):
    rid = candidate(ws)
    decide_release(ws, POLICY, rid, "approve", "bob", "ml-lead", "card reviewed")
    proc = memgov(ws.home, "rollback", "--to", "r0003", "--key", keyholder(ws.home, "nobody", "visitor"), "--role", "visitor", "--reason", "x")
    assert proc.returncode == 2 and "role 'visitor' may not roll back" in flat(proc)
    proc = memgov(ws.home, "rollback", "--to", "r0003", "--key", keyholder(ws.home, "nobody", "visitor"), "--reason", "x")
    assert proc.returncode == 2 and "--role" in flat(proc), "no role, no rollback"
    assert ws.registry.champion() == rid and "release.rolled_back" not in actions_on(ws, "r0003")


def test_rollback_to_a_tainted_release_is_refused(ws):
    proc = memgov(ws.home, "rollback", "--to", "r0002", "--key", keyholder(ws.home, "bob", "ml-lead"), "--role", "ml-lead", "--reason", "regression")
    out = flat(proc)
    assert proc.returncode != 0, out
    assert "tainted" in out and DEMO_FORGET in out
    assert ws.registry.champion() == "r0003"
    for target, why in (("r0001", "tainted"), ("r0004", "rejected")):
        with pytest.raises(ValueError, match=why):
            rollback(ws, POLICY, target, "bob", "ml-lead", "regression")
    assert ws.registry.champion() == "r0003"
    assert not [e for e in ws.log.events() if e["action"] == "release.rolled_back"]


def test_approve_then_roll_back_to_the_retired_champion_and_the_log_verifies(ws):
    rid = candidate(ws)
    proc = memgov(ws.home, "approve", rid, "--key", keyholder(ws.home, "bob", "ml-lead"), "--role", "ml-lead", "--reason", "card reviewed")
    assert proc.returncode == 0, flat(proc)
    assert ws.registry.champion() == rid and ws.registry.status("r0003") == "retired"
    assert "canary.passed" in actions_on(ws, rid)

    proc = memgov(ws.home, "rollback", "--to", "r0003", "--key", keyholder(ws.home, "carol", "governance"), "--role", "governance",
                  "--reason", "regression in production")
    assert proc.returncode == 0, flat(proc)
    assert ws.registry.champion() == "r0003"
    assert ws.registry.status(rid) == "retired"
    back = [e for e in ws.log.events() if e["action"] == "release.rolled_back"]
    assert len(back) == 1
    assert (back[0]["object"], back[0]["actor"]) == ("r0003", "carol")
    assert back[0]["reason"] == f"regression in production (role governance, policy {POLICY.label})", \
        "the role and the policy applied are on the event"
    assert back[0]["details"]["previous"] == rid

    proc = memgov(ws.home, "log", "verify")
    assert proc.returncode == 0 and "hash chain intact" in flat(proc), flat(proc)


# -- gate waivers ---------------------------------------------------------------------------------------------------
REJECTED = "r0004"  # cycle 3 of the demo: failed new_fact_recall, retention and perplexity


def failed_gates(ws: Workspace, rid: str) -> list[str]:
    card = read_card(ws, ws.registry.get(rid))
    return sorted(v["metric"] for v in card["decision"]["verdicts"] if not v["passed"] and v["required"])


def test_a_waiver_by_a_policy_role_is_logged_and_still_needs_another_persons_approval(ws):
    gates = failed_gates(ws, REJECTED)
    assert gates == ["new_fact_recall", "perplexity", "retention"]
    args = [a for g in gates for a in ("--gate", g)]
    proc = memgov(ws.home, "waive", REJECTED, "--key", keyholder(ws.home, "erin", "governance"), "--role", "governance", *args,
                  "--reason", "incident 4711: the batch is known-bad upstream, serve it to reproduce")
    assert proc.returncode == 0, flat(proc)
    assert ws.registry.status(REJECTED) == "candidate" and ws.registry.champion() == "r0003"
    waiver = ws.registry.get(REJECTED).waivers[0]
    assert (waiver["actor"], waiver["role"], waiver["gates"]) == ("erin", "governance", gates)
    event = next(e for e in ws.log.events() if e["action"] == "gates.waived")
    assert event["actor"] == "erin" and event["object"] == REJECTED and event["details"]["gates"] == gates
    with pytest.raises(ApprovalRefused, match="erin requested a change"):
        decide_release(ws, POLICY, REJECTED, "approve", "erin", "governance", "I waived it, so I approve it")
    out = decide_release(ws, merge_overrides(POLICY, {"evaluation": {"canary_min_recall": 0.0}}, "no-canary.yaml"),
                         REJECTED, "approve", "bob", "ml-lead", "waiver reviewed")
    assert out["champion"] == REJECTED
    assert ws.log.verify().ok


def test_a_waiver_is_refused_for_a_role_the_policy_does_not_name(ws):
    gates = failed_gates(ws, REJECTED)
    args = [a for g in gates for a in ("--gate", g)]
    proc = memgov(ws.home, "waive", REJECTED, "--key", keyholder(ws.home, "bob", "ml-lead"), "--role", "ml-lead", *args, "--reason", "ship it")
    assert proc.returncode == 2 and "waiver_roles" in flat(proc) and "governance" in flat(proc)
    assert ws.registry.status(REJECTED) == "rejected" and "gates.waived" not in actions_on(ws, REJECTED)


def test_a_waiver_must_name_every_failed_gate(ws):
    with pytest.raises(ApprovalRefused, match="exactly the failed gates.*perplexity"):
        waive_gates(ws, POLICY, REJECTED, "erin", "governance", "only retention matters", ["retention"])
    assert ws.registry.status(REJECTED) == "rejected"


def test_a_release_rejected_by_a_reviewer_cannot_be_waived(ws):
    rid = candidate(ws)
    decide_release(ws, POLICY, rid, "reject", "bob", "ml-lead", "not this week")
    with pytest.raises(ApprovalRefused, match="no gate failed|exactly the failed gates"):
        waive_gates(ws, POLICY, rid, "erin", "governance", "override the reviewer", ["retention"])
    with pytest.raises(ValueError, match="rejected by a reviewer"):
        ws.registry.waive(rid, "erin", "governance", "override the reviewer", ["retention"])
    assert ws.registry.status(rid) == "rejected"


def test_a_policy_without_waiver_roles_allows_no_waiver(ws):
    strict = merge_overrides(POLICY, {"approval": {"waiver_roles": []}}, "no-waivers.yaml")
    with pytest.raises(ApprovalRefused, match="allows no waivers"):
        waive_gates(ws, strict, REJECTED, "erin", "governance", "x", failed_gates(ws, REJECTED))
