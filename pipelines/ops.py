"""What ops call from code: filing forget requests, with the same validation, store and change-log line as
`memgov forget`. It sits above the workspace (it opens one), so the request store below stays free of it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.requests.models import ForgetRequest, deadline_after
from pipelines.requests.store import StoredRequest
from pipelines.workspace import Workspace


def file_request(ws: Workspace, request: ForgetRequest | dict[str, Any],
                 proof: dict[str, str] | None = None) -> tuple[StoredRequest, bool]:
    """Store one request in the workspace's request store and log `forget.received` once (never its cleartext).

    With `proof` (a verified signature), the requester is the keyring's person and the evidence says so; without
    it the requester is the name the caller gave (trusted code, e.g. an ops script)."""
    stored, created = ws.requests.submit(request)
    if created:
        if proof:
            stored = ws.requests.update_evidence(stored.request_id, lambda _s, e: {**e, "filed": {"signed": proof}})
        ws.log.append(stored.requester if proof else f"user:{stored.requester}", "forget.received",
                      stored.request_id, reason=stored.legal_basis,
                      details={"selector": ws.log.redact(json.dumps(stored.selector, sort_keys=True)),
                               "urgent": stored.urgent, **({"signed": proof} if proof else {})})
    return stored, created


def submit_forget_request(store_url: str | None = None, *, home: str | Path | None = None,
                          **fields: Any) -> tuple[StoredRequest, bool]:
    """Validate and submit one request; safe to retry (an identical resubmission returns created=False).

    `home` is the deployment's state folder (default: MEMGOV_HOME), whose change log records the request;
    `store_url` overrides its request store (e.g. Postgres). `deadline_days=N` may replace `deadline`."""
    if "deadline_days" in fields:
        days = fields.pop("deadline_days")
        if "deadline" in fields:
            raise ValueError("give either deadline or deadline_days, not both")
        fields["deadline"] = deadline_after(days)
    ws = Workspace.open(home, requests_url=store_url)
    try:
        return file_request(ws, fields)
    finally:
        ws.requests.close()
