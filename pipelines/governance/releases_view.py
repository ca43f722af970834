"""What waits for a decision and what serves, read fresh from the registry and the request store.

The releases view is what an approver opens first: the champion, the candidates still pending (their gate verdict,
how much they change, the approvals they still need), the releases decided before, and the forget requests in
flight with the release that honours each. It is computed from the stores every time, never cached, so it cannot
go stale after a decision, a rollback or a forget request.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel

from pipelines.deployment.workspace import Workspace
from pipelines.forget.deadlines import OPEN
from pipelines.governance.approvals import approvers_needed, read_card
from pipelines.trust.keyring import same_person
from policies import Policy

CARD_STATUSES = ("candidate", "approved", "champion", "rejected")  # whose card is read: a rejected one shows which gates
SERVABLE = ("retired", "approved")  # statuses a rollback may return to (tainted ones hold forgotten data)


class ReleaseRow(BaseModel):
    release_id: str
    status: str
    serving: bool
    pending: bool
    cycle: str
    parent: str | None
    created_at: str
    gates: str  # "passed", "failed: a, b" or "-" (not read)
    failed_gates: list[str] = []
    new_facts: int | None = None
    forgotten: int | None = None
    approvals: list[str] = []
    approvals_needed: int | None = None
    requests: list[str] = []


class RequestRow(BaseModel):
    request_id: str
    state: str
    requester: str
    urgent: bool
    deadline: str
    hours_left: float
    candidate: str | None  # the newest release that honours it


class ReleasesView(BaseModel):
    champion: str | None
    policy: str
    roles: list[str]
    releases: list[ReleaseRow]
    requests: list[RequestRow]
    rollback_roles: list[str] = []

    @property
    def pending(self) -> list[str]:
        return [r.release_id for r in self.releases if r.pending]

    @property
    def rollback_targets(self) -> list[str]:
        """Earlier releases that could serve again, newest first."""
        return [r.release_id for r in self.releases if r.status in SERVABLE and not r.serving]


def releases_view(ws: Workspace, policy: Policy, now: dt.datetime | None = None) -> ReleasesView:
    """The registry as an approver reads it: newest first, the champion and pending candidates marked."""
    now = now or dt.datetime.now(dt.UTC)
    champion = ws.registry.champion()
    rows: list[ReleaseRow] = []
    honoured: dict[str, str] = {}
    for rel in reversed(ws.registry.list()):
        for rid in rel.tombstones_honoured:
            honoured.setdefault(rid, rel.release_id)
        rows.append(_row(ws, policy, rel, champion))
    requests = [
        RequestRow(request_id=req.request_id, state=req.state, requester=req.requester, urgent=bool(req.urgent),
                   deadline=req.deadline.isoformat(timespec="minutes"),
                   hours_left=round((req.deadline - now).total_seconds() / 3600, 1),
                   candidate=honoured.get(req.request_id))
        for req in ws.requests.list(states=list(OPEN))
    ]
    return ReleasesView(champion=champion, policy=policy.label, roles=list(policy.approval.roles), releases=rows,
                        requests=requests, rollback_roles=list(policy.approval.rollback_roles))


def _row(ws: Workspace, policy: Policy, rel: Any, champion: str | None) -> ReleaseRow:
    status = "champion" if rel.release_id == champion else rel.status
    pending = status == "candidate" and rel.parent == champion  # else stale: it was judged against another champion
    if status == "candidate" and not pending:
        status = f"stale candidate (judged against {rel.parent or 'no champion'})"
    row = ReleaseRow(release_id=rel.release_id, status=status, serving=rel.release_id == champion, pending=pending,
                     cycle=str(rel.cycle), parent=rel.parent, created_at=str(rel.created_at)[:16], gates="-",
                     approvals=sorted({same_person(a["approver"]) for a in rel.approvals if a["decision"] == "approve"}),
                     requests=list(rel.tombstones_honoured))
    if status not in CARD_STATUSES and not status.startswith("stale"):
        return row
    card = read_card(ws, rel)
    if not card:
        return row
    decision = card.get("decision")
    if decision is not None:
        failed = [v["metric"] for v in decision.get("verdicts", []) if not v.get("passed")]
        row.gates = "passed" if decision.get("passed") else f"failed: {', '.join(failed)}" if failed else "failed"
        row.failed_gates = failed
    sizes = card.get("set_sizes") or {}
    row.new_facts, row.forgotten = int(sizes.get("new_facts", 0)), int(sizes.get("forget", 0))
    if pending:
        row.approvals_needed = max(0, approvers_needed(policy, card) - len(row.approvals))
    return row


def releases_markdown(view: ReleasesView) -> str:
    """Two tables for the UI: releases (champion and pending first in the reading), open forget requests."""
    pending = view.pending
    lines = [f"**Champion:** {view.champion or 'none'} · **waiting for a decision:** "
             f"{', '.join(pending) if pending else 'nothing'} · policy {view.policy} · deciding roles: "
             f"{', '.join(view.roles)}", "",
             "| release | status | gates | new facts | forgotten | approvals | still needed | cycle | parent | created |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in view.releases:
        mark = "**champion**" if r.serving else "**pending decision**" if r.pending else r.status
        lines.append(f"| {r.release_id} | {mark} | {r.gates} | {_n(r.new_facts)} | {_n(r.forgotten)} | "
                     f"{', '.join(r.approvals) or '-'} | {_n(r.approvals_needed)} | {r.cycle} | {r.parent or '-'} | "
                     f"{r.created_at} |")
    lines += ["", f"**Open forget requests:** {len(view.requests)}", ""]
    if view.requests:
        lines += ["| request | state | urgent | requester | deadline | hours left | candidate |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {q.request_id} | {q.state} | {'yes' if q.urgent else 'no'} | {q.requester} | {q.deadline} | "
                  f"{q.hours_left:g} | {q.candidate or '-'} |" for q in view.requests]
    return "\n".join(lines)


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)
