"""The one owner of a forget request's state: received → (held →) planned → applied → verified | failed.

Every state change of a request goes through a function here, each named for the step it records, so the rules of
the lifecycle (what is logged with it, that a verified request keeps only hashes and counts) live in one place; no
other module calls the request store's `transition` (a test enforces it). Evidence is merged, never lost.
"""

from __future__ import annotations

from typing import Any

from pipelines.deployment.workspace import Workspace

ACTOR = "system:forget"


def hold(ws: Workspace, request_id: str, evidence: dict[str, Any], note: str, run_id: str | None = None,
         details: dict[str, Any] | None = None) -> None:
    """A plan too broad for the policy waits for a named role's confirmation."""
    ws.requests.transition(request_id, "held", evidence, note=note)
    ws.log.append(ACTOR, "forget.held", request_id, reason=note, run_id=run_id, details=details or {})


def confirmed(ws: Workspace, request_id: str, evidence: dict[str, Any], note: str) -> None:
    """A held request, confirmed, starts over from `received` (the caller logs who confirmed it, signed)."""
    ws.requests.transition(request_id, "received", evidence, note=note)


def planned(ws: Workspace, request_id: str, evidence: dict[str, Any], note: str) -> None:
    """The selector resolved (the scrub's journal comes with it), or the scrub done with the model side pending."""
    ws.requests.transition(request_id, "planned", evidence, note=note)


def applied(ws: Workspace, request_id: str, evidence: dict[str, Any], note: str) -> None:
    """The model side applied to a candidate (or nothing for the model to forget); verification comes next."""
    ws.requests.transition(request_id, "applied", evidence, note=note)


def resumed(ws: Workspace, request_id: str, state: str, evidence: dict[str, Any], note: str) -> None:
    """A failed request retried: back to the step it failed at (`received` or `planned`)."""
    if state not in ("received", "planned"):
        raise ValueError(f"a retried request resumes at 'received' or 'planned', not {state!r}")
    ws.requests.transition(request_id, state, evidence, note=note)


def fail(ws: Workspace, request_id: str, reason: str, evidence: dict[str, Any], run_id: str | None = None,
         actor: str = ACTOR) -> None:
    """The request failed, with the reason in its evidence and the log; the champion is untouched by it."""
    ws.requests.transition(request_id, "failed", {**evidence, "failure": reason}, note=reason)
    ws.log.append(actor, "forget.failed", request_id, reason=reason, run_id=run_id)


def conclude(ws: Workspace, request_id: str, state: str, evidence: dict[str, Any], reason: str,
             run_id: str | None = None, actor: str = "system:unlearn") -> None:
    """End (or defer) a request: `verified` or `failed` with the evidence, or `deferred` (a log line only: the
    candidate that carried it did not pass, the next one carries it). A verified request keeps only the hashes and
    counts of what it forgot: its cleartext is purged."""
    if state in ("verified", "failed"):
        ws.requests.transition(request_id, state, evidence, note=reason)
    if state == "verified":
        ws.requests.purge_cleartext(request_id)
    ws.log.append(actor, f"forget.{state}", request_id, reason=reason, run_id=run_id)


__all__ = ["applied", "conclude", "confirmed", "fail", "hold", "planned", "resumed"]
