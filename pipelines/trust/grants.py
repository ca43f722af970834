"""Changing who may do what: keyring grants and UI passwords, each a logged change (never a silent file edit)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path

from pipelines.admission.identifiers import name_problem
from pipelines.ledger import ChangeLog
from pipelines.trust import keyring as kr
from pipelines.trust import keys
from pipelines.trust.keyring import Person

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(secret: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(digest).decode()


def check_password(stored: str | None, secret: str) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        return False
    _, salt, digest = stored.split("$")
    got = hashlib.scrypt(secret.encode(), salt=base64.b64decode(salt), dklen=32, **_SCRYPT)
    return hmac.compare_digest(got, base64.b64decode(digest))


def _name(name: str) -> str:
    """A keyring name is who decisions, requests and submissions are recorded under: one that could pass for
    another person's (look-alike letters, direction controls) is refused, as for any requester."""
    name = name.strip()
    if not name or len(name) > 100 or any(not c.isprintable() for c in name):
        raise ValueError("name: give the person's printable name (at most 100 characters)")
    problem = name_problem(name)
    if problem:
        raise ValueError(f"name {problem}")
    return name


def grant(home: Path, log: ChangeLog, name: str, public_keys: list[str], roles: list[str], by: str,
          reason: str) -> dict:
    """Add keys and roles to a person (created if new); a key already held by someone else is refused."""
    name, by = _name(name), _name(by)
    if not reason.strip():
        raise ValueError("reason: say why the grant is made (it is logged)")
    kr.system_key(home)  # the keyring and the system key come into being together
    ring = kr.load(home)
    for public in public_keys:
        keys.parse_public(public, "--key")
        holder = ring.person_of(public)
        if holder is not None and kr.same_person(holder) != kr.same_person(name):
            raise ValueError(f"--key {keys.key_id(public)} is already {holder}'s; one key, one person")
    found = ring.person(name)
    known, person = found or (name, Person())
    before = (list(person.keys), list(person.roles))
    person.keys = sorted(set(person.keys) | set(public_keys))
    person.roles = sorted(set(person.roles) | {r.strip() for r in roles if r.strip()})
    out = {"person": known, "keys": [keys.key_id(k) for k in person.keys], "roles": person.roles}
    if found is not None and (person.keys, person.roles) == before:
        return {**out, "unchanged": True}  # granting what is held already changes nothing and logs nothing
    ring.people[known] = person
    kr.save(home, ring)
    log.append(by, "keyring.granted", known, reason, details=out)
    return out


def _known(ring: kr.Keyring, name: str, fix: str) -> tuple[str, Person]:
    """The keyring's spelling of `name` and their entry, or ValueError naming the fix."""
    found = ring.person(name)
    if found is None:
        raise ValueError(f"{name} is not in the keyring; {fix}")
    return found


def set_password(home: Path, log: ChangeLog, name: str, secret: str, by: str) -> None:
    if len(secret) < 12:
        raise ValueError("password: use at least 12 characters")
    ring = kr.load(home)
    known, person = _known(ring, name, "grant them a role first (memgov keys grant)")
    person.password = hash_password(secret)
    ring.people[known] = person
    kr.save(home, ring)
    log.append(_name(by), "keyring.password_set", known, "UI local login password set")


def revoke(home: Path, log: ChangeLog, name: str, public_keys: list[str], roles: list[str], by: str,
           reason: str) -> dict:
    """Take keys and roles from a person (key rotation, leaving a role): from now on a statement signed with a
    revoked key names nobody, so it is refused wherever it is checked, including a pending request or batch
    signed with it before (its owner signs it again)."""
    name, by = _name(name), _name(by)
    if not reason.strip():
        raise ValueError("reason: say why the revocation is made (it is logged)")
    if not public_keys and not roles:
        raise ValueError("name at least one --key or --role to revoke")
    ring = kr.load(home)
    known, person = _known(ring, name, "memgov keys list shows who is")
    missing = [keys.key_id(k) for k in public_keys if k not in person.keys]
    if missing:
        raise ValueError(f"--key {', '.join(missing)}: not {known}'s; `memgov keys list` shows their keys")
    person.keys = [k for k in person.keys if k not in set(public_keys)]
    person.roles = [r for r in person.roles if r not in {x.strip() for x in roles}]
    ring.people[known] = person
    kr.save(home, ring)
    out = {"person": known, "revoked_keys": [keys.key_id(k) for k in public_keys], "revoked_roles": sorted(roles),
           "keys": [keys.key_id(k) for k in person.keys], "roles": person.roles}
    log.append(by, "keyring.revoked", known, reason, details=out)
    return out


def rotate_ui_secret(home: Path, log: ChangeLog, by: str, reason: str) -> None:
    """A new secret for session cookies, run identities and UI filings: everyone signs in again, and forget
    requests filed from the UI and not yet run must be filed again (their attestation no longer verifies)."""
    if not reason.strip():
        raise ValueError("reason: say why the secret is rotated (it is logged)")
    ring = kr.load(home)
    ring.ui.secret = secrets.token_hex(32)
    kr.save(home, ring)
    log.append(_name(by), "keyring.ui_secret_rotated", "ui", reason)
