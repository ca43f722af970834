"""Deadlines of forget requests: due at the earlier of the legal deadline and the policy's SLA after receipt."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

from pipelines.forget.deadlines import deadline_markdown, deadline_watch

NOW = dt.datetime(2031, 1, 10, 12, tzinfo=dt.UTC)


def _req(rid: str, state: str, received_hours_ago: float, deadline_in_hours: float, urgent: bool = False):
    return SimpleNamespace(request_id=rid, state=state, urgent=urgent,
                           timestamps={"received": NOW - dt.timedelta(hours=received_hours_ago)},
                           deadline=NOW + dt.timedelta(hours=deadline_in_hours))


def test_levels_follow_the_earlier_of_deadline_and_sla():
    statuses = deadline_watch([
        _req("fresh", "received", 1, 24 * 30),  # SLA 72 h from receipt: 71 h left
        _req("sla-near", "planned", 60, 24 * 30),  # 12 h left of the SLA (< 18 h = a quarter)
        _req("deadline-near", "received", 1, 10),  # its own deadline comes first
        _req("late", "applied", 80, 24 * 30, urgent=True),  # 8 h past the SLA
        _req("done", "verified", 100, -5),  # verified: nothing to watch
    ], sla_hours=72, now=NOW)
    assert [(s.request_id, s.level, s.hours_left) for s in statuses] == [
        ("late", "overdue", -8.0), ("deadline-near", "near", 10.0), ("sla-near", "near", 12.0), ("fresh", "ok", 71.0)]
    assert statuses[0].line() == "late (applied, urgent): due 2031-01-10 04:00 UTC, 8 h overdue"
    md = deadline_markdown(statuses, 72)
    assert "| late | applied | yes | 2031-01-10 04:00 | -8 | **OVERDUE** |" in md
    assert deadline_markdown([], 72).startswith("No open forget request")
