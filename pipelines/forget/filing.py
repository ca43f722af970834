"""Filing a forget request, in one place: `memgov forget`, the UI's filing job and ops' code
(`submit_forget_request`) all go through `file_request`, with the same validation, signature, store and log line.

A forget request is signed by the person who files it, and checked again before anything is deleted.

Forgetting destroys data, so "who asked" must be proven rather than typed: the requester's key signs the request
id, its selector, reason, legal basis and urgency; the keyring's holder of that key is the requester. The envelope
is kept in the request's evidence, so the run that scrubs re-verifies it: a row written straight into the request
store (or a signature lifted from another request) is refused there, before the first step of the scrub.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from pipelines.core.digests import canonical_json
from pipelines.deployment.workspace import Workspace
from pipelines.state.requests.models import ForgetRequest, deadline_after
from pipelines.state.requests.store import StoredRequest
from pipelines.trust.decisions import (
    SignatureRefused,
    SignedBy,
    content_subject,
    refuse_replay,
    sign_statement,
    statement,
    verify_decision,
)
from pipelines.trust.keyring import Keyring, same_person
from pipelines.trust.keys import load_private, public_text

ACTION = "forget"


def request_subject(req: ForgetRequest | StoredRequest) -> dict[str, str]:
    """What the requester's signature covers (the deadline is not: a resubmission recomputes it from now)."""
    selector = req.model_dump(mode="json")["selector"] if isinstance(req, ForgetRequest) else req.selector
    content = {"selector": selector, "reason": req.reason, "legal_basis": req.legal_basis, "urgent": bool(req.urgent)}
    return content_subject("request", req.request_id, content)


def sign_request(key_file: str | Path, req: ForgetRequest) -> dict[str, Any]:
    return sign_statement(key_file, statement(ACTION, request_subject(req), "requester", req.reason))


def holder_of(ws: Workspace, key_file: str | Path) -> str:
    """The keyring's name for the holder of this private key, or a refusal naming the fix."""
    public = public_text(load_private(key_file).public_key())
    person = ws.keyring().person_of(public)
    if person is None:
        raise SignatureRefused(f"the key in {key_file} is not in the deployment's keyring; an administrator grants "
                               "keys with `memgov keys grant NAME --key PUBLIC --role ROLE`")
    return person


def check_filing(ws: Workspace, req: ForgetRequest, envelope: Any, fresh: bool = True) -> SignedBy:
    """The signer of a request being filed; the requester it names must be the signer, and (`fresh`) the
    signature must not have filed anything before."""
    who = verify_decision(ws.keyring(), envelope, ACTION, request_subject(req), need_role=False)
    if same_person(req.requester) != same_person(who.person):
        raise SignatureRefused(f"the request is signed by {who.person}'s key but names {req.requester} as its "
                               "requester; a request is filed under the signer's name only")
    if fresh:
        refuse_replay(ws.log.events(), who)
    return who


def filed_signer(ws: Workspace, stored: StoredRequest) -> SignedBy:
    """Re-verify a stored request's signature before its scrub (any age: requests wait for cycles); refuse one
    that was never signed, was signed for other content, or whose signer is not the requester it records."""
    filed = (stored.evidence or {}).get("filed") or {}
    envelope = filed.get("envelope")
    if envelope is None and filed.get("attested") is not None:
        return attested_by(ws.keyring(), filed["attested"], stored)
    if envelope is None:
        raise SignatureRefused(f"request {stored.request_id} carries no requester's signature (it did not come "
                               "through `memgov forget --key`, `submit_forget_request(key=...)` or the signed-in UI); nothing is "
                               "deleted for an unsigned request: file it again, signed")
    who = verify_decision(ws.keyring(), envelope, ACTION, request_subject(stored), need_role=False, max_age=None)
    if same_person(stored.requester) != same_person(who.person):
        raise SignatureRefused(f"request {stored.request_id} records {stored.requester} as its requester but is "
                               f"signed by {who.person}")
    return who


UI_KIND = "memgov.ui-filing/v1"


def _ui_mac(secret: str, body: dict[str, Any]) -> str:
    return hmac.new(secret.encode(), canonical_json(body), hashlib.sha256).hexdigest()


def ui_attestation(ring: Keyring, req: ForgetRequest, user: str, via: str, run_id: str) -> dict[str, Any]:
    """The server's word that `user`, signed in to `memgov ui`, filed exactly this request from run `run_id`.

    A person at the browser holds no private key, so the UI server vouches instead: an HMAC under the keyring's
    UI secret (the one that seals run identities) over the request's content, the user and the run. A row written
    straight into the request store cannot carry one without that secret."""
    if not ring.ui.secret:
        raise SignatureRefused("the keyring's ui section has no secret, so the UI cannot vouch for a filing: "
                               "configure sign-in (docs/security.md) or file with `memgov forget --key`")
    body = {"kind": UI_KIND, "subject": request_subject(req), "user": user, "via": via, "run_id": run_id}
    return {**body, "mac": _ui_mac(ring.ui.secret, body)}


def attested_by(ring: Keyring, attestation: Any, req: ForgetRequest | StoredRequest) -> SignedBy:
    """The signed-in requester a UI attestation names, after checking its seal, content, user and requester."""
    if not isinstance(attestation, dict) or attestation.get("kind") != UI_KIND:
        raise SignatureRefused(f"request {req.request_id}'s UI attestation is malformed")
    body = {k: v for k, v in attestation.items() if k != "mac"}
    mac = str(attestation.get("mac", ""))
    if not ring.ui.secret or not hmac.compare_digest(mac, _ui_mac(ring.ui.secret, body)):
        raise SignatureRefused(f"request {req.request_id}'s UI attestation was not made by this deployment's UI "
                               "server (or the UI secret has been rotated since): file it again")
    if body.get("subject") != request_subject(req):
        raise SignatureRefused(f"request {req.request_id}'s UI attestation covers other content than the request")
    person = ring.person(str(body.get("user", "")))
    if person is None:
        raise SignatureRefused(f"{body.get('user')} filed request {req.request_id} from the UI but is no longer in "
                               "the keyring")
    if same_person(req.requester) != same_person(person[0]):
        raise SignatureRefused(f"request {req.request_id} records {req.requester} as its requester but was filed "
                               f"from the UI by {person[0]}")
    return SignedBy(person[0], f"ui:{body.get('via')}", "requester", req.reason, "ui:" + mac, {})


# -- filing ------------------------------------------------------------------------------------------------------
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
