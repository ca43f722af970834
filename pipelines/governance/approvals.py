"""Who may decide a release: approvals and rejections (signed or from the UI), gate waivers and policy adoption."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from evals.names import FORGET_METRICS
from pipelines.core.failpoints import failpoint
from pipelines.deployment.workspace import Workspace
from pipelines.governance.policy_in_force import adopt
from pipelines.governance.promotion import ApprovalRefused, promote_with_canary, read_card, refuse_if_stale
from pipelines.trust.decisions import (
    SignedBy,
    claim,
    content_subject,
    refuse_replay,
    release_subject,
    verify_decision,
)
from pipelines.trust.keyring import same_person
from policies import Policy


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


def authorised(actor: str, role: str, reason: str, roles: list[str], doing: str, key: str, missing: str,
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
    authorised(who.person, who.role, who.reason, current.approval.policy_roles, "change the deployment's policy",
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
    actor, role, reason = authorised(actor, role, reason, policy.approval.waiver_roles, "waive gates", "waiver_roles",
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
