"""Deadline alerts the deployment can route: every alert lands in the home's outbox (a durable record an operator
or a log shipper reads), and, when `MEMGOV_ALERT_WEBHOOK` names a URL, is POSTed there as JSON (Slack- and
generic-webhook compatible: a `text` line plus the fields).

An alert is sent once per request and level (near, then overdue), not every time the watch runs; a webhook that
is down is retried a few times and then reported, never allowed to hide the failing check that raised it."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pipelines.forget.deadlines import DeadlineStatus

WEBHOOK_ENV = "MEMGOV_ALERT_WEBHOOK"
OUTBOX = Path("alerts") / "forget_deadlines.jsonl"
ATTEMPTS = 3


@dataclass(frozen=True)
class Delivery:
    sent: list[str]  # request ids alerted this time
    webhook_error: str = ""  # why the webhook did not take them, when it did not


def _already_sent(outbox: Path) -> set[tuple[str, str]]:
    if not outbox.exists():
        return set()
    seen = set()
    for line in outbox.read_text().splitlines():
        if line.strip():
            entry = json.loads(line)
            seen.add((entry["request_id"], entry["level"]))
    return seen


def _post(url: str, body: dict, attempts: int = ATTEMPTS, timeout: float = 5.0) -> str:
    data = json.dumps(body).encode()
    error = ""
    for attempt in range(attempts):
        request = urllib.request.Request(url, data=data, headers={"content-type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - the operator's URL
                if 200 <= response.status < 300:
                    return ""
                error = f"HTTP {response.status}"
        except (urllib.error.URLError, OSError) as exc:
            error = str(getattr(exc, "reason", exc))
        time.sleep(0.2 * 2 ** attempt)
    return f"the alert webhook did not accept the alert after {attempts} attempts ({error})"


def route_deadline_alerts(home: Path, statuses: Iterable[DeadlineStatus], webhook: str | None = None) -> Delivery:
    """Record and send an alert for each request that is newly near its due time or newly overdue."""
    outbox = Path(home) / OUTBOX
    seen = _already_sent(outbox)
    fresh = [s for s in statuses if s.level in ("near", "overdue") and (s.request_id, s.level) not in seen]
    if not fresh:
        return Delivery([])
    outbox.parent.mkdir(parents=True, exist_ok=True)
    with outbox.open("a") as fh:
        for s in fresh:
            fh.write(json.dumps({"request_id": s.request_id, "level": s.level, "state": s.state,
                                 "due": s.due.isoformat(), "hours_left": round(s.hours_left, 1),
                                 "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
    url = webhook if webhook is not None else os.environ.get(WEBHOOK_ENV, "")
    error = ""
    if url:
        text = "memgov forget deadlines: " + "; ".join(s.line() for s in fresh)
        error = _post(url, {"text": text, "alerts": [s.model_dump(mode="json") for s in fresh]})
    return Delivery([s.request_id for s in fresh], error)
