"""Who launched a governance run from the UI: a run tag the authenticating server sets and seals.

The server strips any identity tag a client sends, then adds the signed-in user and an HMAC over (user, job,
time) keyed with the keyring's UI secret. A governance op believes only a tag whose seal checks, so a run
launched around the server (a bare GraphQL port, `dagster job launch --tags`) has no identity and is refused.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

from pipelines.trust.keyring import Keyring, same_person

USER_TAG = "memgov/identity"
SEAL_TAG = "memgov/identity-seal"
VIA_TAG = "memgov/identity-via"
MAX_AGE_S = 24 * 3600
GOVERNANCE_JOBS = ("release_decision", "gate_waiver", "rollback", "forget_request", "forget_filing")


class IdentityRefused(ValueError):
    """A governance run without a believable identity, or one whose config claims somebody else."""


@dataclass(frozen=True)
class UiUser:
    name: str
    via: str  # "proxy" (trusted reverse-proxy header) or "login" (local password)

    def proof(self, run_id: str | None) -> dict[str, str]:
        return {"via": f"ui:{self.via}", "user": self.name, **({"run_id": run_id} if run_id else {})}


def _mac(secret: str, user: str, job: str, via: str, issued: int) -> str:
    msg = f"{user}\n{job}\n{via}\n{issued}".encode()
    return hmac.new(secret.encode(), msg, hashlib.sha256).hexdigest()


def identity_tags(secret: str, user: str, job: str, via: str, now: float | None = None) -> dict[str, str]:
    issued = int(now if now is not None else time.time())
    return {USER_TAG: user, VIA_TAG: via, SEAL_TAG: f"{issued}:{_mac(secret, user, job, via, issued)}"}


def ui_user(ring: Keyring, tags: dict[str, str], job: str, now: float | None = None) -> UiUser:
    """The signed-in user the server sealed into this run's tags, or a refusal that says how to decide instead."""
    how = ("decide from `memgov ui` signed in (a trusted proxy header or the local login; see the keyring's ui "
           "section), or from the CLI with a signed decision (`memgov approve ID --key FILE`)")
    user, seal, via = tags.get(USER_TAG), tags.get(SEAL_TAG, ""), tags.get(VIA_TAG, "")
    if not user:
        raise IdentityRefused(f"this {job} run carries no signed-in user: {how}")
    secret = ring.ui.secret
    issued, _, mac = seal.partition(":")
    if not secret or not issued.isdigit() or not hmac.compare_digest(mac, _mac(secret, user, job, via, int(issued))):
        raise IdentityRefused(f"this {job} run's identity tag ({user}) was not set by memgov's UI server: {how}")
    if (now if now is not None else time.time()) - int(issued) > MAX_AGE_S:
        raise IdentityRefused(f"this {job} run was launched more than 24 h ago; launch it again")
    if ring.person(user) is None:
        raise IdentityRefused(f"{user} is signed in but not in the deployment's keyring: an administrator grants "
                              "roles with `memgov keys grant`")
    return UiUser(ring.person(user)[0], via)


def check_claim(user: UiUser, claimed: str, field: str, roles_needed: str, role: str, ring: Keyring) -> None:
    """A config field naming someone other than the signed-in user, or a role the keyring does not grant, is refused."""
    if claimed.strip() and same_person(claimed) != same_person(user.name):
        raise IdentityRefused(f"config {field} is {claimed!r} but you are signed in as {user.name}: a decision is "
                              f"recorded under the signed-in user only (leave {field} empty)")
    granted = ring.roles_of(user.name)
    if role not in granted:
        raise IdentityRefused(f"role '{role}' is not granted to {user.name} in the keyring (granted: "
                              f"{', '.join(granted) or 'none'}); {roles_needed}")
