"""A forget request is signed by the person who files it, and checked again before anything is deleted.

Forgetting destroys data, so "who asked" must be proven rather than typed: the requester's key signs the request
id, its selector, reason, legal basis and urgency; the keyring's holder of that key is the requester. The envelope
is kept in the request's evidence, so the run that scrubs re-verifies it: a row written straight into the request
store (or a signature lifted from another request) is refused there, before the first step of the scrub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.requests.models import ForgetRequest
from pipelines.requests.store import StoredRequest
from pipelines.trust.decisions import (
    SignatureRefused,
    SignedBy,
    content_subject,
    refuse_replay,
    sign_statement,
    statement,
    verify_decision,
)
from pipelines.trust.keyring import same_person
from pipelines.trust.keys import load_private, public_text
from pipelines.workspace import Workspace

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
    envelope = ((stored.evidence or {}).get("filed") or {}).get("envelope")
    if envelope is None:
        raise SignatureRefused(f"request {stored.request_id} carries no requester's signature (it did not come "
                               "through `memgov forget --key` or `submit_forget_request(key=...)`); nothing is "
                               "deleted for an unsigned request: file it again, signed")
    who = verify_decision(ws.keyring(), envelope, ACTION, request_subject(stored), need_role=False, max_age=None)
    if same_person(stored.requester) != same_person(who.person):
        raise SignatureRefused(f"request {stored.request_id} records {stored.requester} as its requester but is "
                               f"signed by {who.person}")
    return who
