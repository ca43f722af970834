"""Signed decisions: what a person's signature covers and how it is checked before anything changes.

A statement names the action, exactly what it acts on (a release by its id and the digests of its manifest,
weights and evaluation card; a rollback also the champion it replaces; a forget request or a batch by the hash of
its content), the role claimed, the reason, a time and a nonce. An approval signed for release A therefore cannot
approve release B, nor A after its card changed, and a rollback cannot be replayed once the champion has moved.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pipelines.core.digests import canonical_json
from pipelines.trust import keys
from pipelines.trust.keyring import Keyring

KIND = "memgov.decision/v1"
ACTIONS = ("approve", "reject", "waive", "rollback", "forget", "submit", "confirm", "retry", "adopt_policy")
MAX_AGE = timedelta(hours=24)
MAX_SKEW = timedelta(minutes=5)


class SignatureRefused(ValueError):
    """A signed decision that does not prove what it claims; the message says which check failed and the fix."""


@dataclass(frozen=True)
class SignedBy:
    """Who a verified signature belongs to, in which role, and the digest of exactly what they signed."""

    person: str
    key_id: str
    role: str
    reason: str
    digest: str
    envelope: dict[str, Any]

    def proof(self) -> dict[str, str]:
        return {"key_id": self.key_id, "statement": self.digest, "via": "signature"}


def release_subject(release, champion: Any = ...) -> dict[str, Any]:
    """What a decision about a release is bound to; `champion` for acts that replace the one in service."""
    subject = {"release": release.release_id, "manifest": release.manifest_digest, "weights": release.model,
               "card": release.evaluation_card}
    if champion is not ...:
        subject["champion"] = champion
    return subject


def content_subject(kind: str, name: str, content: Any) -> dict[str, str]:
    return {kind: name, "content": "sha256:" + hashlib.sha256(canonical_json(content)).hexdigest()}


def statement(action: str, subject: dict[str, Any], role: str, reason: str, details: dict | None = None,
              now: datetime | None = None) -> dict[str, Any]:
    if action not in ACTIONS:
        raise ValueError(f"action {action!r} is not signable; actions: {', '.join(ACTIONS)}")
    return {"kind": KIND, "action": action, "subject": subject, "role": role.strip(), "reason": reason.strip(),
            "details": details or {}, "time": (now or datetime.now(UTC)).isoformat(timespec="seconds"),
            "nonce": secrets.token_hex(12)}


def sign_statement(key_file: str | Path, stmt: dict[str, Any]) -> dict[str, Any]:
    return {"statement": stmt, **keys.sign(keys.load_private(key_file), stmt)}


def digest(envelope: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical_json(envelope.get("statement"))).hexdigest()


def _shape(envelope: Any) -> dict[str, Any]:
    if not isinstance(envelope, dict) or not {"statement", "key", "signature"} <= set(envelope):
        raise SignatureRefused("a signed decision is a JSON object with 'statement', 'key' and 'signature' (as "
                               "`memgov sign` writes it)")
    stmt = envelope["statement"]
    if not isinstance(stmt, dict) or stmt.get("kind") != KIND:
        raise SignatureRefused(f"statement.kind must be {KIND!r}; this is not a memgov decision")
    for name in ("action", "role", "reason", "time", "nonce"):
        if not isinstance(stmt.get(name), str):
            raise SignatureRefused(f"statement.{name} is missing or not a string")
    if not isinstance(stmt.get("subject"), dict):
        raise SignatureRefused("statement.subject is missing: a signature must name what it decides")
    return stmt


def _explain_subject(signed: dict[str, Any], expected: dict[str, Any]) -> str:
    ident = next((k for k in ("release", "request", "batch") if k in expected), None)
    if ident and signed.get(ident) != expected.get(ident):
        return f"it was signed for {ident} {signed.get(ident)!r}, not {expected[ident]!r}"
    changed = [k for k in expected if signed.get(k) != expected[k]]
    if changed == ["champion"]:
        return (f"it was signed while {signed.get('champion')} served; the champion is now {expected['champion']} "
                "(sign again against the current state)")
    return (f"the {', '.join(changed)} of {expected.get(ident, 'it')} differ from what was signed: review it again "
            "and sign the current state")


def verify_decision(ring: Keyring, envelope: Any, action: str, subject: dict[str, Any],
                    now: datetime | None = None, need_role: bool = True,
                    max_age: timedelta | None = MAX_AGE) -> SignedBy:
    """Check signature, key, person, role grant, action, subject and age; return who signed, or refuse.
    `need_role=False` for acts anyone in the keyring may sign (filing a forget request); `max_age=None` for a
    statement checked long after it was made (a submission, verified when its batch is admitted)."""
    stmt = _shape(envelope)
    if not keys.verify(envelope["key"], stmt, envelope["signature"]):
        raise SignatureRefused("the signature does not verify: the decision was altered after signing or signed with "
                               "another key than the one it names")
    kid = keys.key_id(envelope["key"])
    person = ring.person_of(envelope["key"])
    if person is None:
        raise SignatureRefused(f"key {kid} is not in the deployment's keyring; an administrator grants keys with "
                               "`memgov keys grant NAME --key PUBLIC --role ROLE`")
    if stmt["action"] != action:
        raise SignatureRefused(f"the signature is for '{stmt['action']}', not '{action}'")
    if stmt["subject"] != subject:
        raise SignatureRefused(f"the signature does not cover this {action}: {_explain_subject(stmt['subject'], subject)}")
    granted = ring.roles_of(person)
    if need_role and stmt["role"] not in granted:
        raise SignatureRefused(f"role '{stmt['role']}' is not granted to {person} in the keyring (granted: "
                               f"{', '.join(granted) or 'none'}); roles are granted by the keyring, not claimed")
    now = now or datetime.now(UTC)
    try:
        signed_at = datetime.fromisoformat(stmt["time"])
    except ValueError:
        raise SignatureRefused(f"statement.time {stmt['time']!r} is not an ISO time") from None
    signed_at = signed_at if signed_at.tzinfo else signed_at.replace(tzinfo=UTC)
    if signed_at > now + MAX_SKEW or (max_age is not None and now - signed_at > max_age):
        raise SignatureRefused(f"the signature was made at {stmt['time']}; signatures are accepted for "
                               f"{int((max_age or MAX_AGE).total_seconds() // 3600)} h: sign again")
    return SignedBy(person, kid, stmt["role"], stmt["reason"], digest(envelope), envelope)


def refuse_replay(log_events: list[dict], signed: SignedBy) -> None:
    """One signature, one act: a statement already in the log is not accepted a second time."""
    for event in log_events:
        if (event.get("details") or {}).get("signed", {}).get("statement") == signed.digest:
            raise SignatureRefused(f"this signed {signed.envelope['statement']['action']} was already used (change "
                                   f"log event {event['seq']}); a signature is accepted once")


CLAIMS = "trust/claims/"


def claim(store, signed: SignedBy) -> None:
    """One signature, one act, atomically: the first process to create the statement's claim document acts, every
    other one (a replay, or the same file handed to four processes at once) is refused. The log scan in
    `refuse_replay` keeps refusing statements used before claims existed."""
    key = CLAIMS + signed.digest.split(":", 1)[1]
    body = {"statement": signed.digest, "person": signed.person,
            "action": signed.envelope["statement"]["action"]}
    if not store.compare_and_swap(key, None, canonical_json(body).decode()):
        raise SignatureRefused(f"this signed {body['action']} was already used; a signature is accepted once "
                               "(sign again for a new decision)")
