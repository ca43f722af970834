"""Small client for ops scripts: submit a forget request to a request store by URL."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .store import RequestStore, StoredRequest


def submit_forget_request(store_url: str, **fields: Any) -> tuple[StoredRequest, bool]:
    """Validate and submit one request; safe to retry (an identical resubmission returns created=False).

    `deadline_days=N` may replace `deadline` for "N days from now"."""
    if "deadline_days" in fields:
        days = fields.pop("deadline_days")
        if "deadline" in fields:
            raise ValueError("give either deadline or deadline_days, not both")
        if not isinstance(days, int | float) or days <= 0:
            raise ValueError(f"deadline_days must be a positive number, got {days!r}")
        fields["deadline"] = dt.datetime.now(dt.UTC) + dt.timedelta(days=days)
    store = RequestStore(store_url)
    try:
        return store.submit(fields)
    finally:
        store.close()
