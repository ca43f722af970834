"""Approval rules, promotion by compare-and-swap, the post-promotion canary, rollback and forget verification."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from evals.names import FORGET_METRICS
from pipelines.artifacts import load_model
from pipelines.cycle.policy_in_force import adopt
from pipelines.failpoints import failpoint
from pipelines.forget.lifecycle import conclude
from pipelines.forget.verify import bounds, request_checks
from pipelines.forget.weights import release_after_move
from pipelines.knowledge import current_facts, qa, sample
from pipelines.lm import exact_match
from pipelines.trust.decisions import (
    SignedBy,
    claim,
    content_subject,
    refuse_replay,
    release_subject,
    verify_decision,
)
from pipelines.trust.keyring import same_person
from pipelines.workspace import Workspace
from policies import Policy


class ApprovalRefused(ValueError):
    """An approval that the policy does not allow; the message says which rule and why."""


def read_card(ws: Workspace, release) -> dict[str, Any]:
    if not release.evaluation_card:
        return {}
    with tempfile.TemporaryDirectory(dir=ws.work_dir) as tmp:
        ws.store.get_dir(release.evaluation_card, Path(tmp) / "card")
        return json.loads((Path(tmp) / "card" / "card.json").read_text())


def requesters(ws: Workspace, release) -> set[str]:
    """Who asked for the changes in a release (its creator, waivers, the batch's submitter, the requesters of the
    forget requests it honours): they may not approve it themselves."""
    names = {release.created_by} | {w["actor"] for w in release.waivers}
    if (release.data_snapshots or {}).get("submitted_by"):
        names.add(release.data_snapshots["submitted_by"])
    for rid in release.tombstones_honoured:
        try:
            names.add(ws.requests.get(rid).requester)
        except (KeyError, ValueError):
            continue
    return names


def _created(release) -> datetime:
    created = datetime.fromisoformat(str(release.created_at))
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def approvers_needed(policy: Policy, card: dict[str, Any]) -> int:
    sizes = card.get("set_sizes", {})
    changed = int(sizes.get("new_facts", 0)) + int(sizes.get("forget", 0))
    return 2 if changed > policy.approval.two_approvers_above_facts else 1


def refuse_if_stale(ws: Workspace, release) -> None:
    """A candidate's gates compared it with its parent: promoting it over any other champion would serve a model
    nobody compared with what is in service (and could bring back what the newer champion dropped)."""
    champion = ws.registry.champion()
    if release.parent != champion:
        raise ApprovalRefused(
            f"release {release.release_id} was judged against {release.parent or 'no champion'}, but the champion is "
            f"now {champion}; it cannot be promoted over a champion it was not compared with: re-run its cycle to "
            f"judge it against {champion}")


def signed(ws: Workspace, envelope: Any, action: str, subject: dict[str, Any], claimed: str | None = None,
           need_role: bool = True) -> SignedBy:
    """Who signed this decision, checked against the keyring, the subject and the log (one signature, one act);
    a name given beside the signature must be the signer's."""
    who = verify_decision(ws.keyring(), envelope, action, subject, need_role=need_role)
    if claimed and same_person(claimed) != same_person(who.person):
        raise ApprovalRefused(f"the decision is signed by {who.person}'s key but claims to be {claimed}'s; "
                              "a decision is recorded under the signer's name only")
    refuse_replay(ws.log.events(), who)
    claim(ws.store, who)
    return who


def decision_subject(ws: Workspace, action: str, release_id: str) -> dict[str, Any]:
    """What a signature on `action` about `release_id` must cover: the one definition signing and checking share."""
    release = ws.registry.get(release_id)
    return release_subject(release, champion=ws.registry.champion()) if action == "rollback" else release_subject(release)


def decide_signed(ws: Workspace, policy: Policy, release_id: str, decision: str, envelope: Any,
                  claimed: str | None = None, run_id: str | None = None) -> dict[str, Any]:
    """An approval or rejection from outside the UI: the signer's keyring identity and granted role decide."""
    who = signed(ws, envelope, decision, decision_subject(ws, decision, release_id), claimed)
    return decide_release(ws, policy, release_id, decision, who.person, who.role, who.reason, run_id=run_id,
                          proof=who.proof())


def decide_release(ws: Workspace, policy: Policy, release_id: str, decision: str, approver: str, role: str,
                   reason: str, run_id: str | None = None, now: datetime | None = None,
                   proof: dict | None = None) -> dict[str, Any]:
    """The single code path for approvals and rejections from the UI job, the CLI and auto-approval; callers
    establish who `approver` is (a verified signature, the authenticated UI user, or the system)."""
    if decision not in ("approve", "reject"):
        raise ApprovalRefused(f"decision must be 'approve' or 'reject', got {decision!r}")
    approver, role, reason = approver.strip(), role.strip(), reason.strip()
    if not approver or not reason:
        raise ApprovalRefused("approver and reason are required: give who decides and why")
    release = ws.registry.get(release_id)
    status = ws.registry.status(release_id)
    if status != "candidate":
        hint = (" (it failed its gates; no approval can override that, only a gate waiver by a role the policy "
                "names: memgov waive)") if status == "rejected" else ""
        raise ApprovalRefused(f"release {release_id} is '{status}', only a 'candidate' can be decided{hint}")
    automatic = approver == policy.approval.auto_approver and policy.approval.mode == "auto"
    if not automatic and role not in policy.approval.roles:
        raise ApprovalRefused(f"role '{role}' may not decide releases; allowed roles: {', '.join(policy.approval.roles)}")
    if policy.approval.forbid_self_approval and same_person(approver) in {same_person(n) for n in requesters(ws, release)}:
        raise ApprovalRefused(f"{approver} requested a change in {release_id} and cannot also approve it")
    card = read_card(ws, release)
    if decision == "approve":
        refuse_if_stale(ws, release)
        refuse_without_passing_verdict(release, card)
    now = now or datetime.now(UTC)
    if decision == "approve" and now - _created(release) > timedelta(hours=policy.approval.expiry_hours):
        raise ApprovalRefused(
            f"the approval window of {policy.approval.expiry_hours} h for {release_id} has expired; re-run the cycle"
        )
    ws.registry.add_approval(release_id, approver, role, decision, reason, policy=policy.label, proof=proof)
    if decision == "reject":
        ws.registry.set_status(release_id, "rejected", approver, reason, run_id=run_id, proof=proof)
        return {"release_id": release_id, "status": "rejected", "champion": ws.registry.champion()}
    approvals = {same_person(a["approver"]) for a in ws.registry.get(release_id).approvals if a["decision"] == "approve"}
    needed = approvers_needed(policy, card)
    if len(approvals) < needed:
        return {"release_id": release_id, "status": "candidate", "champion": ws.registry.champion(),
                "waiting_for": f"{needed - len(approvals)} more distinct approver(s)"}
    try:
        ws.registry.set_status(release_id, "approved", approver, reason, run_id=run_id, proof=proof)
    except ValueError:
        now_status = ws.registry.status(release_id)
        if now_status == "candidate":
            raise
        raise ApprovalRefused(f"release {release_id} was decided by another approval at the same moment (it is now "
                              f"'{now_status}'); your approval is recorded, nothing more is needed") from None
    failpoint("release.approved")
    return promote_with_canary(ws, policy, release_id, approver, reason, run_id)


def refuse_without_passing_verdict(release, card: dict[str, Any]) -> None:
    """Approve only what its own card says passed its gates (or whose failed gates are all waived): a status of
    'candidate' alone is not enough, since a crash between registering a release and recording its rejection
    would leave a failed candidate looking decidable."""
    verdict = card.get("decision") if isinstance(card, dict) else None
    if not isinstance(verdict, dict) or "passed" not in verdict:
        raise ApprovalRefused(f"release {release.release_id} has no recorded gate verdict on its evaluation card; "
                              "re-run its cycle")
    if verdict["passed"]:
        return
    failed = {v.get("metric") for v in verdict.get("verdicts") or [] if not v.get("passed") and v.get("required", True)}
    waived = {g for w in release.waivers for g in w.get("gates", [])}
    if failed - waived:
        raise ApprovalRefused(f"release {release.release_id} failed its gates ({', '.join(sorted(failed - waived))}) "
                              "according to its evaluation card; only a gate waiver (memgov waive) can clear that")


def _authorised(actor: str, role: str, reason: str, roles: list[str], doing: str, key: str, missing: str,
                allows_none: str) -> tuple[str, str, str]:
    """Who acts, in which role and why, checked against the roles the policy names for this act."""
    actor, role, reason = actor.strip(), role.strip(), reason.strip()
    if not actor or not reason:
        raise ApprovalRefused(missing)
    if role not in roles:
        allowed = ", ".join(roles) or f"none: this policy allows no {allows_none}"
        raise ApprovalRefused(f"role '{role}' may not {doing}; approval.{key} in the policy: {allowed}")
    return actor, role, reason


def policy_subject(policy: Policy) -> dict[str, str]:
    """What a signature adopting `policy` covers: its whole content, not its file name."""
    return content_subject("policy", policy.label, policy.model_dump(mode="json"))


def adopt_policy_signed(ws: Workspace, current: Policy, new: Policy, envelope: Any) -> dict[str, Any]:
    """Change the deployment's policy: signed by a person the keyring grants a role that the policy *in force*
    names under approval.policy_roles (so a policy cannot be replaced by one that lets its author in)."""
    who = signed(ws, envelope, "adopt_policy", policy_subject(new))
    _authorised(who.person, who.role, who.reason, current.approval.policy_roles, "change the deployment's policy",
                "policy_roles", "a policy change needs the signer and a reason", "policy changes")
    return adopt(ws, new, who.person, who.reason, role=who.role, proof=who.proof())


def waive_signed(ws: Workspace, policy: Policy, release_id: str, envelope: Any, claimed: str | None = None,
                 run_id: str | None = None) -> dict[str, Any]:
    """A waiver from outside the UI: the gates it covers are part of what was signed."""
    statement = envelope.get("statement", {}) if isinstance(envelope, dict) else {}
    gates = list((statement.get("details") or {}).get("gates") or [])
    who = signed(ws, envelope, "waive", decision_subject(ws, "waive", release_id), claimed)
    return waive_gates(ws, policy, release_id, who.person, who.role, who.reason, gates, run_id=run_id,
                       proof=who.proof())


def waive_gates(ws: Workspace, policy: Policy, release_id: str, actor: str, role: str, reason: str,
                gates: list[str], run_id: str | None = None, proof: dict | None = None) -> dict[str, Any]:
    """The one exception to "a failed gate blocks promotion": a logged waiver by a role the policy names.

    The waiver must name every failed required gate (nothing is waived by accident) and only returns the
    release to 'candidate': it still needs approvals, and whoever waived cannot also approve it.
    """
    actor, role, reason = _authorised(actor, role, reason, policy.approval.waiver_roles, "waive gates", "waiver_roles",
                                      "waiver needs who waives (--by) and why (--reason)", "waivers")
    card = read_card(ws, ws.registry.get(release_id))
    failed = sorted(v["metric"] for v in card.get("decision", {}).get("verdicts", [])
                    if not v["passed"] and v.get("required", True))
    named = sorted({g.strip() for g in gates if g.strip()})
    if named != failed:
        raise ApprovalRefused(f"the waiver must name exactly the failed gates of {release_id}: "
                              f"{', '.join(failed) or 'none'} (given: {', '.join(named) or 'none'})")
    forgetting = [g for g in failed if g in FORGET_METRICS or g.startswith("forget_request:")]
    if forgetting:
        raise ApprovalRefused(f"{release_id} failed forgetting checks ({', '.join(forgetting)}); forgetting is owed "
                              "to the people who asked for it and cannot be waived")
    ws.registry.waive(release_id, actor, role, reason, named, run_id=run_id, proof=proof)
    return {"release_id": release_id, "status": ws.registry.status(release_id), "waived": named,
            "champion": ws.registry.champion(), "waiting_for": "approval"}


def canary(ws: Workspace, policy: Policy, release_id: str) -> tuple[bool, float]:
    """Re-check the release in service on a small sample of the current knowledge it was built on (its lineage):
    facts admitted for a candidate that was rejected are not knowledge this release was meant to have."""
    release = ws.registry.get(release_id)
    model, tokenizer = load_model(ws, release.model)
    tomb = ws.requests.tombstones()
    facts = [r for fid, r in sorted(current_facts(ws.data.rows("admitted")).items())
             if not tomb.has_fact(fid) and ws.registry.in_lineage(release, "row_ids", r["id"])]
    probe = [qa(r) for r in sample(facts, policy.evaluation.canary_size, seed=7)]
    if not probe:
        return True, 1.0
    recall = float(exact_match(model, tokenizer, [q["prompt"] for q in probe], [q["target"] for q in probe]).mean())
    return recall >= policy.evaluation.canary_min_recall, recall


def promote_with_canary(ws: Workspace, policy: Policy, release_id: str, actor: str, reason: str,
                        run_id: str | None = None) -> dict[str, Any]:
    refuse_if_stale(ws, ws.registry.get(release_id))
    previous = ws.registry.champion()
    if not ws.registry.promote(release_id, actor, reason, expected=previous, run_id=run_id, owed=["canary"]):
        raise RuntimeError(f"promotion of {release_id} lost a race: the champion moved away from {previous}")
    failpoint("release.promoted")
    return after_promotion(ws, policy, release_id, previous, run_id)


def after_promotion(ws: Workspace, policy: Policy, release_id: str, previous: str | None,
                    run_id: str | None = None) -> dict[str, Any]:
    """What follows a promotion: the old champion's weights released if tainted, the canary and its verdict.
    Recovery calls it again for a promotion whose canary verdict was never recorded."""
    release_after_move(ws, policy, "promotion", run_id)  # a tainted champion just left service: its weights go
    ok, recall = canary(ws, policy, release_id)
    ws.log.append("system:canary", "canary.passed" if ok else "canary.failed", release_id,
                  reason=f"recall {recall:.3f} vs minimum {policy.evaluation.canary_min_recall}", run_id=run_id)
    if not ok and previous is not None and ws.registry.status(previous) == "tainted":
        ws.log.append("system:canary", "canary.rollback_refused", release_id, run_id=run_id,
                      reason=f"previous champion {previous} is tainted by a forget request; {release_id} stays in service")
        return {"release_id": release_id, "status": "champion", "champion": ws.registry.champion(),
                "canary_recall": recall, "rollback_refused": previous}
    if not ok and previous is not None:
        why = f"canary failed on {release_id} (recall {recall:.3f})"
        ws.registry.rollback(previous, "system:canary", why, run_id=run_id)
        ws.registry.set_status(release_id, "withdrawn", "system:canary", why, run_id=run_id)
        fail_forget_requests(ws, release_id, [f"canary failed (recall {recall:.3f}); {release_id} withdrawn"])
        return {"release_id": release_id, "status": ws.registry.status(release_id), "champion": ws.registry.champion(),
                "canary_recall": recall, "rolled_back_to": previous}
    verify_forget_requests(ws, policy, release_id)
    return {"release_id": release_id, "status": "champion", "champion": ws.registry.champion(), "canary_recall": recall}


def verify_forget_requests(ws: Workspace, policy: Policy, release_id: str) -> list[str]:
    """Requests honoured by a newly served release become verified when every forgetting check held."""
    release = ws.registry.get(release_id)
    card = read_card(ws, release)
    metrics = card.get("metrics", {})
    done = []
    for rid in release.tombstones_honoured:
        req = ws.requests.get(rid)
        if req.state != "applied":
            continue
        checks = request_checks(policy, metrics, req.evidence)
        evidence = {"verification": {"release": release_id, "checks": checks, "bounds": bounds(policy),
                                     "forgetting": card.get("forgetting", {}), "metrics": metrics}}
        failed = [k for k, ok in checks.items() if not ok]
        conclude(ws, rid, "failed" if failed else "verified", evidence,
                 f"release {release_id}: " + (", ".join(failed) if failed else "all checks held"))
        done.append(rid)
    return done


def fail_forget_requests(ws: Workspace, release_id: str, reasons: list[str]) -> list[str]:
    """The release that carried these requests' forgetting left service: they fail, with the reason."""
    failed = []
    for rid in ws.registry.get(release_id).tombstones_honoured:
        if ws.requests.get(rid).state == "applied":
            conclude(ws, rid, "failed", {"verification": {"release": release_id, "reasons": reasons}}, "; ".join(reasons))
            failed.append(rid)
    return failed


def rollback_signed(ws: Workspace, policy: Policy, to_release: str, envelope: Any, claimed: str | None = None,
                    run_id: str | None = None) -> dict[str, Any]:
    """A rollback from outside the UI, bound to the target's digests and to the champion it replaces."""
    who = signed(ws, envelope, "rollback", decision_subject(ws, "rollback", to_release), claimed)
    return rollback(ws, policy, to_release, who.person, who.role, who.reason, run_id=run_id, proof=who.proof())


def rollback(ws: Workspace, policy: Policy, to_release: str, actor: str, role: str, reason: str,
             run_id: str | None = None, proof: dict | None = None) -> dict[str, Any]:
    """Serve an earlier release again: model, adapters, edits and index snapshot move together. Only a role the
    policy names under approval.rollback_roles may do it, with a reason."""
    actor, role, reason = _authorised(actor, role, reason, policy.approval.rollback_roles, "roll back",
                                      "rollback_roles", "a rollback needs who does it (--actor) and why (--reason)",
                                      "rollback")
    ws.registry.rollback(to_release, actor, f"{reason} (role {role}, policy {policy.label})", run_id=run_id,
                         proof=proof)
    release_after_move(ws, policy, "rollback", run_id)
    return {"champion": ws.registry.champion()}
