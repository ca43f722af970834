"""Forget requests against time: each must be verified by its own deadline and within the policy's SLA.

`unlearning.sla_hours` is the deployment's promise: a request received is verified within that many hours. A
request is due at the earlier of its legal deadline and that promise; it is `near` once less than a quarter of the
SLA is left and `overdue` once past due, until it is verified (or has failed, which a person must act on as well).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel

OPEN = ("received", "held", "planned", "applied", "failed")  # not yet verified: someone must still act
NEAR_SHARE = 0.25


class DeadlineStatus(BaseModel):
    request_id: str
    state: str
    urgent: bool
    due: dt.datetime
    hours_left: float
    level: Literal["ok", "near", "overdue"]

    def line(self) -> str:
        span = abs(self.hours_left)
        amount = f"{span:g} h" if span >= 1 else "under an hour"
        when = f"{amount} overdue" if self.level == "overdue" else f"{amount} left"
        return f"{self.request_id} ({self.state}{', urgent' if self.urgent else ''}): due {self.due:%Y-%m-%d %H:%M} UTC, {when}"


def deadline_watch(requests: Iterable, sla_hours: float, now: dt.datetime | None = None) -> list[DeadlineStatus]:
    """Every open request with its due time and level, the most pressing first."""
    now = now or dt.datetime.now(dt.UTC)
    out = []
    for req in requests:
        if req.state not in OPEN:
            continue
        received = req.timestamps.get("received") or now
        due = min(req.deadline, received + dt.timedelta(hours=sla_hours))
        left = (due - now).total_seconds() / 3600
        level = "overdue" if left < 0 else "near" if left < NEAR_SHARE * sla_hours else "ok"
        out.append(DeadlineStatus(request_id=req.request_id, state=req.state, urgent=bool(req.urgent), due=due,
                                  hours_left=round(left, 1), level=level))
    return sorted(out, key=lambda s: s.hours_left)


def deadline_markdown(statuses: list[DeadlineStatus], sla_hours: float) -> str:
    if not statuses:
        return f"No open forget request (SLA {sla_hours:g} h)."
    rows = ["| request | state | urgent | due (UTC) | hours left | level |", "|---|---|---|---|---|---|"]
    rows += [f"| {s.request_id} | {s.state} | {'yes' if s.urgent else 'no'} | {s.due:%Y-%m-%d %H:%M} | "
             f"{s.hours_left:g} | {'**OVERDUE**' if s.level == 'overdue' else s.level} |" for s in statuses]
    return f"SLA: verified within {sla_hours:g} h of receipt, and by each request's deadline.\n\n" + "\n".join(rows)
