"""Rollback: serve an earlier release again, by a role the policy names; a tainted release is never served again."""

from __future__ import annotations

from typing import Any

from pipelines.deployment.workspace import Workspace
from pipelines.forget.weights import release_after_move
from pipelines.governance.approvals import authorised, decision_subject, signed
from policies import Policy


def rollback_signed(ws: Workspace, policy: Policy, to_release: str, envelope: Any, claimed: str | None = None,
                    run_id: str | None = None) -> dict[str, Any]:
    """A rollback from outside the UI, bound to the target's digests and to the champion it replaces."""
    who = signed(ws, envelope, "rollback", decision_subject(ws, "rollback", to_release), claimed)
    return rollback(ws, policy, to_release, who.person, who.role, who.reason, run_id=run_id, proof=who.proof())


def rollback(ws: Workspace, policy: Policy, to_release: str, actor: str, role: str, reason: str,
             run_id: str | None = None, proof: dict | None = None) -> dict[str, Any]:
    """Serve an earlier release again: model, adapters, edits and index snapshot move together. Only a role the
    policy names under approval.rollback_roles may do it, with a reason."""
    actor, role, reason = authorised(actor, role, reason, policy.approval.rollback_roles, "roll back",
                                     "rollback_roles", "a rollback needs who does it (--actor) and why (--reason)",
                                     "rollback")
    ws.registry.rollback(to_release, actor, f"{reason} (role {role}, policy {policy.label})", run_id=run_id,
                         proof=proof)
    release_after_move(ws, policy, "rollback", run_id)
    return {"champion": ws.registry.champion()}
