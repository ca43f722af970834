"""Changing who may do what: grants, revocations, UI passwords and settings, administrators.

Each change is a statement signed by a keyring administrator's key (`--by KEYFILE`: the signer, not a typed name),
appended to the keyring's chain and logged with the statement's digest; see pipelines.trust.keyring.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipelines.core.identifiers import name_problem
from pipelines.state.ledger import ChangeLog
from pipelines.trust import keyring as kr
from pipelines.trust import keys

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
AdminKey = Ed25519PrivateKey | str | Path


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


def _admin(by: AdminKey) -> Ed25519PrivateKey:
    if isinstance(by, Ed25519PrivateKey):
        return by
    if not str(by).strip():
        raise ValueError("--by: the administrator's private key file (the signer of this change)")
    return keys.load_private(Path(by))


def _reason(reason: str, what: str) -> str:
    if not reason.strip():
        raise ValueError(f"reason: say why the {what} is made (it is logged)")
    return reason


def _signed(home: Path, log: ChangeLog, by: AdminKey, op: str, args: dict, reason: str, action: str,
            obj: str, details: dict) -> kr.Keyring:
    ring, statement = kr.sign_change(home, _admin(by), op, args, reason)
    log.append(statement["admin"], action, obj, reason,
               details={**details, "statement": {"seq": statement["seq"], "digest": statement["digest"]}})
    return ring


def grant(home: Path, log: ChangeLog, name: str, public_keys: list[str], roles: list[str], by: AdminKey,
          reason: str) -> dict:
    """Add keys and roles to a person (created if new); a key already held by someone else is refused."""
    name, reason = _name(name), _reason(reason, "grant")
    ring = kr.load(home)
    for public in public_keys:
        keys.parse_public(public, "--key")
        holder = ring.person_of(public)
        if holder is not None and kr.same_person(holder) != kr.same_person(name):
            raise ValueError(f"--key {keys.key_id(public)} is already {holder}'s; one key, one person")
    found = ring.person(name)
    known, person = found or (name, kr.Person())
    new_keys = sorted(set(person.keys) | set(public_keys))
    new_roles = sorted(set(person.roles) | {r.strip() for r in roles if r.strip()})
    out = {"person": known, "keys": [keys.key_id(k) for k in new_keys], "roles": new_roles}
    if found is not None and (new_keys, new_roles) == (sorted(person.keys), sorted(person.roles)):
        return {**out, "unchanged": True}  # granting what is held already changes nothing and logs nothing
    args = {"person": known, "keys": sorted(public_keys), "roles": sorted({r.strip() for r in roles if r.strip()})}
    _signed(home, log, by, "grant", args, reason, "keyring.granted", known, out)
    return out


def _known(ring: kr.Keyring, name: str, fix: str) -> tuple[str, kr.Person]:
    """The keyring's spelling of `name` and their entry, or ValueError naming the fix."""
    found = ring.person(name)
    if found is None:
        raise ValueError(f"{name} is not in the keyring; {fix}")
    return found


def set_password(home: Path, log: ChangeLog, name: str, secret: str, by: AdminKey):
    """Set a person's local-login password; returns the keyring as it now stands (whose `ui.local_login` says
    whether the password signs anyone in yet)."""
    if len(secret) < 12:
        raise ValueError("password: use at least 12 characters")
    known, _ = _known(kr.load(home), name, "grant them a role first (memgov keys grant)")
    return _signed(home, log, by, "password", {"person": known, "hash": hash_password(secret)},
                   "UI local login password set", "keyring.password_set", known, {})


def revoke(home: Path, log: ChangeLog, name: str, public_keys: list[str], roles: list[str], by: AdminKey,
           reason: str) -> dict:
    """Take keys and roles from a person (key rotation, leaving a role): from now on a statement signed with a
    revoked key names nobody, so it is refused wherever it is checked, including a pending request or batch
    signed with it before (its owner signs it again)."""
    name, reason = _name(name), _reason(reason, "revocation")
    if not public_keys and not roles:
        raise ValueError("name at least one --key or --role to revoke")
    known, person = _known(kr.load(home), name, "memgov keys list shows who is")
    missing = [keys.key_id(k) for k in public_keys if k not in person.keys]
    if missing:
        raise ValueError(f"--key {', '.join(missing)}: not {known}'s; `memgov keys list` shows their keys")
    args = {"person": known, "keys": sorted(public_keys), "roles": sorted({r.strip() for r in roles})}
    ring = _signed(home, log, by, "revoke", args, reason, "keyring.revoked", known,
                   {"person": known, "revoked_keys": [keys.key_id(k) for k in public_keys],
                    "revoked_roles": sorted(roles)})
    after = ring.people[known]
    return {"person": known, "revoked_keys": [keys.key_id(k) for k in public_keys], "revoked_roles": sorted(roles),
            "keys": [keys.key_id(k) for k in after.keys], "roles": after.roles}


def configure_ui(home: Path, log: ChangeLog, by: AdminKey, reason: str, **settings) -> kr.Keyring:
    """Who the UI believes (trusted proxies, the header they set, local login): a signed change like a grant."""
    unknown = set(settings) - set(kr.UI_FIELDS)
    if unknown:
        raise ValueError(f"ui setting(s) {', '.join(sorted(unknown))}: use {', '.join(kr.UI_FIELDS)}")
    return _signed(home, log, by, "ui", settings, _reason(reason, "UI setting change"), "keyring.ui_configured", "ui",
                   {"settings": sorted(settings)})


def change_admins(home: Path, log: ChangeLog, by: AdminKey, reason: str, add: dict[str, str] | None = None,
                  remove: list[str] | None = None) -> kr.Keyring:
    """Add or remove keyring administrators, signed by one in force (the last one cannot be removed)."""
    reason = _reason(reason, "administrator change")
    ring = None
    for name, public in (add or {}).items():
        keys.parse_public(public, f"--add {name}")
        ring = _signed(home, log, by, "admin_add", {"name": _name(name), "key": public}, reason,
                       "keyring.admin_added", name, {"key": keys.key_id(public)})
    for name in remove or []:
        ring = _signed(home, log, by, "admin_remove", {"name": name}, reason, "keyring.admin_removed", name, {})
    if ring is None:
        raise ValueError("name at least one --add NAME=ed25519:… or --remove NAME")
    return ring


def pin_admins(home: Path, log: ChangeLog, admins: dict[str, str]) -> kr.Keyring:
    """The keyring's root of trust, once (needs the deployment's secrets: the root is sealed by the system key)."""
    ring = kr.pin_admins(home, admins)
    log.append("system:secrets-holder", "keyring.admins_pinned", "keyring", "the keyring's root of trust",
               details={"admins": {n: keys.key_id(k) for n, k in sorted(admins.items())}, "root": ring.head})
    return ring


def rotate_ui_secret(home: Path, log: ChangeLog, by: AdminKey, reason: str) -> None:
    """A new secret for session cookies, run identities and UI filings: everyone signs in again, and forget
    requests filed from the UI and not yet run must be filed again (their attestation no longer verifies). Only
    an administrator's key may order it; the secret itself lives with the secrets, outside the home."""
    reason = _reason(reason, "rotation")
    admin = kr.load(home).require_admin(_admin(by), "a UI-secret rotation")
    kr.rotate_ui_secret(home)
    log.append(admin, "keyring.ui_secret_rotated", "ui", reason)
