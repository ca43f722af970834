"""Which release served from when to when, who put it there and who approved it: read back from the change log,
the only record that orders every move of the champion pointer."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, ConfigDict

MOVES = ("release.promoted", "release.rolled_back")


class ServicePeriod(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    release_id: str
    start: str
    end: str | None  # None: still serving
    how: str  # promoted | rolled back
    by: str
    reason: str
    approvals: list[str]  # "name (role): reason"


def service_periods(events: Iterable[dict]) -> list[ServicePeriod]:
    """One period per move of the champion, in log order; each ends when the next begins."""
    events = list(events)
    approvals: dict[str, list[str]] = {}
    moves: list[dict] = []
    for e in events:
        if e["action"] == "release.approval_recorded" and (e.get("details") or {}).get("decision") == "approve":
            approvals.setdefault(e["object"], []).append(f"{e['actor']} ({e['details'].get('role')}): {e['reason']}")
        elif e["action"] in MOVES:
            moves.append(e)
    periods = []
    for i, e in enumerate(moves):
        periods.append(ServicePeriod(
            release_id=e["object"], start=e["time"], end=moves[i + 1]["time"] if i + 1 < len(moves) else None,
            how="promoted" if e["action"] == "release.promoted" else "rolled back", by=e["actor"], reason=e["reason"],
            approvals=list(approvals.get(e["object"], []))))
    return periods


def serving_at(periods: list[ServicePeriod], when: datetime) -> ServicePeriod | None:
    """The period covering `when` (an aware datetime), or None before the first release served."""
    found = None
    for period in periods:
        if _parse(period.start) <= when:
            found = period
    return found


def _parse(text: str) -> datetime:
    from datetime import UTC

    stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)
