"""What ops call from code: filing forget requests, with the same validation, signature, store and change-log line
as `memgov forget`. It sits above the workspace (it opens one), so the request store below stays free of it."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from pipelines.forget.filing import attested_by, check_filing, holder_of, sign_request, ui_attestation
from pipelines.requests.models import ForgetRequest, deadline_after
from pipelines.requests.store import StoredRequest
from pipelines.trust.decisions import SignatureRefused
from pipelines.trust.keyring import same_person
from pipelines.workspace import Workspace


def file_request(ws: Workspace, request: ForgetRequest | dict[str, Any],
                 envelope: dict[str, Any]) -> tuple[StoredRequest, bool]:
    """Store one request signed by its requester and log `forget.received` once (never its cleartext).

    The fields are validated first (a bad field is named whoever signed); then the signature must be the
    requester's own over exactly this request. An identical resubmission returns the stored one (created=False)."""
    req = request if isinstance(request, ForgetRequest) else ForgetRequest(**request)
    who = check_filing(ws, req, envelope, fresh=False)
    existing = existing_request(ws, req.request_id)
    if existing is None:
        check_filing(ws, req, envelope)  # a signature files one request, once
    stored, created = ws.requests.submit(req)
    if created:
        filed = {"signed": who.proof(), "envelope": envelope}
        stored = ws.requests.update_evidence(stored.request_id, lambda _s, e: {**e, "filed": filed})
        ws.log.append(who.person, "forget.received", stored.request_id, reason=stored.legal_basis,
                      details={"selector": ws.log.redact(json.dumps(stored.selector, sort_keys=True)),
                               "urgent": stored.urgent, "signed": who.proof()})
    return stored, created


UI_FILING_KEY = "forget/ui-filings/{run_id}.json"  # which request each UI run filed


def file_request_from_ui(ws: Workspace, fields: dict[str, Any], user: str, via: str,
                         run_id: str) -> tuple[StoredRequest, bool]:
    """File a request for the user signed in to `memgov ui` (the run's sealed identity): the same validation,
    store and log line as a signed filing, vouched for by the UI server instead of a private key.

    The requester is the signed-in user (a `requester` naming anyone else is refused), and one run files one
    request: a second filing carrying the same run id is refused."""
    claimed = str(fields.pop("requester", "") or "").strip()
    if claimed and same_person(claimed) != same_person(user):
        raise SignatureRefused(f"requester is {claimed!r} but you are signed in as {user}: a request is filed under "
                               "the signed-in user's name only (leave requester empty)")
    req = ForgetRequest(**{**fields, "requester": user})
    ring = ws.keyring()
    attestation = ui_attestation(ring, req, user, via, run_id)
    attested_by(ring, attestation, req)
    claim = UI_FILING_KEY.format(run_id=run_id)  # claimed once, by compare-and-swap: two filings cannot both pass
    if not ws.store.compare_and_swap(claim, None, json.dumps({"request_id": req.request_id})):
        filed = ws.store.read_json(claim, default={}) or {}
        raise SignatureRefused(f"run {run_id} already filed request {filed.get('request_id')}; one run files one request")
    stored, created = ws.requests.submit(req)
    if created:
        proof = {"via": f"ui:{via}", "user": user, "run_id": run_id}
        stored = ws.requests.update_evidence(stored.request_id,
                                             lambda _s, e: {**e, "filed": {"signed": proof, "attested": attestation}})
        ws.log.append(user, "forget.received", stored.request_id, reason=stored.legal_basis, run_id=run_id,
                      details={"selector": ws.log.redact(json.dumps(stored.selector, sort_keys=True)),
                               "urgent": stored.urgent, "signed": proof})
    return stored, created


def existing_request(ws: Workspace, request_id: str) -> StoredRequest | None:
    """The stored request with this id, or None."""
    try:
        return ws.requests.get(request_id)
    except (KeyError, ValueError):
        return None


def _deadline_for_retry(ws: Workspace, request_id: Any, days: Any):
    """`deadline_days` counts from the first filing: a retry of a request already on file gets the deadline it was
    filed with (so the retry is the same content), not one a few seconds later."""
    deadline = deadline_after(days)
    stored = existing_request(ws, request_id) if isinstance(request_id, str) else None
    if stored is not None and "received" in stored.timestamps:
        then = stored.timestamps["received"] + dt.timedelta(days=days)
        if abs(then - stored.deadline) < dt.timedelta(minutes=5):
            return stored.deadline
    return deadline


def submit_forget_request(store_url: str | None = None, *, key: str | Path, home: str | Path | None = None,
                          **fields: Any) -> tuple[StoredRequest, bool]:
    """Validate, sign with `key` (the requester's private key file) and submit one request; safe to retry (an
    identical resubmission returns created=False).

    The requester is the keyring's holder of `key` (a `requester` field naming anyone else is refused). `home` is
    the deployment's state folder (default: MEMGOV_HOME), whose change log records the request; `store_url`
    overrides its request store (e.g. Postgres). `deadline_days=N` may replace `deadline`."""
    if key is None or not str(key).strip():
        raise ValueError("key: give the requester's private key file (create one with `memgov keys new FILE`); "
                         "it signs the request, and its holder in the keyring is the requester")
    ws = Workspace.open(home, requests_url=store_url)
    if "deadline_days" in fields:
        days = fields.pop("deadline_days")
        if "deadline" in fields:
            raise ValueError("give either deadline or deadline_days, not both")
        fields["deadline"] = _deadline_for_retry(ws, fields.get("request_id"), days)
    try:
        req = ForgetRequest(**{"requester": holder_of(ws, key), **fields})
        return file_request(ws, req, sign_request(key, req))
    finally:
        ws.requests.close()
