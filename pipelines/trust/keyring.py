"""The deployment's keyring: which public key belongs to whom, and which roles each person is granted.

Identity is what the keyring says a key is, never what someone types. The keyring has a root of trust: `memgov init`
(or `memgov keys pin-admins`, once) pins the administrators' public keys in a root sealed by the system key, which
lives with the secrets, outside the home. Every change after that (grant, revocation, password, UI settings,
administrators) is a statement signed by an administrator in force and chained to the one before it; the people
and UI sections of the file are what those statements add up to, kept for reading. Every read re-checks the seal,
each signature and the chain, and re-derives the people: a hand-edited keyring is refused with what changed. The
digest of the newest statement is kept with the secrets too, so an older keyring put back is refused as well.

File: `$MEMGOV_HOME/keyring.yaml` or MEMGOV_KEYRING (e.g. a mounted ConfigMap). The UI's sealing secret is not in it:
it lives with the secrets (pipelines/core/secrets.py).
"""

from __future__ import annotations

import datetime as dt
import os
import secrets as token
import unicodedata
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipelines.core import secrets
from pipelines.core.digests import canonical_json, digest_of
from pipelines.core.filelock import exclusive
from pipelines.trust import keys

HEADER = ("# memgov keyring: who holds which key and which roles they are granted. Change it only with `memgov keys`\n"
          "# (grant, revoke, password, ui, admins), signed by a keyring administrator: `people` and `ui` are derived\n"
          "# from the signed statements, and a hand edit is refused on the next read.\n")
OPS = ("grant", "revoke", "password", "ui", "admin_add", "admin_remove")
UI_FIELDS = ("trusted_proxies", "user_header", "local_login")


class KeyringTampered(keys.KeyFileError):
    """The keyring on disk is not what its signed statements say; the message lists what differs."""


def same_person(name: str) -> str:
    """The form two names are compared in: case, width and spacing variants are one person."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keys: list[str] = Field(default_factory=list)
    roles: list[str] = Field(default_factory=list)
    password: str | None = None  # scrypt hash for the UI's local login (memgov keys password)

    @field_validator("keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for k in v:
            keys.parse_public(k, "people.*.keys")
        return v


class UiAuth(BaseModel):
    """How `memgov ui` learns who is at the browser. `secret` is filled from the secrets folder when read, never
    written to the keyring file."""

    model_config = ConfigDict(extra="forbid")
    trusted_proxies: list[str] = Field(default_factory=list)  # addresses whose identity header is believed
    user_header: str = "X-Forwarded-User"
    local_login: bool = False  # username + password (people.*.password) at /memgov/login
    secret: str | None = Field(default=None, exclude=True)

    @property
    def configured(self) -> bool:
        return bool(self.trusted_proxies) or self.local_login


class Keyring(BaseModel):
    """The keyring as memgov acts on it: what the verified statements add up to."""

    model_config = ConfigDict(extra="forbid")
    system: str | None = None
    admins: dict[str, str] = Field(default_factory=dict)  # administrator name -> public key
    people: dict[str, Person] = Field(default_factory=dict)
    ui: UiAuth = Field(default_factory=UiAuth)
    head: str | None = None  # digest of the newest statement (or of the root), what the secrets folder remembers

    def person_of(self, public: str) -> str | None:
        for name, person in self.people.items():
            if public in person.keys:
                return name
        return None

    def person(self, name: str) -> tuple[str, Person] | None:
        wanted = same_person(name)
        for known, person in self.people.items():
            if same_person(known) == wanted:
                return known, person
        return None

    def roles_of(self, name: str) -> list[str]:
        found = self.person(name)
        return list(found[1].roles) if found else []

    def admin_of(self, public: str) -> str | None:
        return next((name for name, key in self.admins.items() if key == public), None)

    def require_admin(self, key: Ed25519PrivateKey, what: str) -> str:
        """The administrator holding `key`, or ValueError: only an administrator's key may order `what`."""
        public = keys.public_text(key.public_key())
        admin = self.admin_of(public)
        if admin is None:
            raise ValueError(f"--by: key {keys.key_id(public)} is not a keyring administrator's (administrators: "
                             f"{', '.join(sorted(self.admins)) or 'none pinned'}); only one may order {what}")
        return admin


def keyring_path(home: Path) -> Path:
    return Path(os.environ.get("MEMGOV_KEYRING") or Path(home) / "keyring.yaml")


def system_key_path(home: Path) -> Path:
    return secrets.system_key_path(home)


def _lock_path(home: Path) -> Path:
    return keyring_path(home).with_name(".keyring.lock")


def _head_path(home: Path) -> Path | None:
    witness = secrets.witness_path(home)
    return witness.with_name("keyring.head") if witness is not None else None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# -- reading ---------------------------------------------------------------------------
def _read_file(home: Path) -> dict | None:
    path = keyring_path(home)
    if not path.exists():
        return None
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise keys.KeyFileError(f"keyring {path} is not readable YAML ({exc}); restore it from the deployment's "
                             "configuration") from None
    if not isinstance(raw, dict):
        raise keys.KeyFileError(f"keyring {path} is not a mapping; restore it from the deployment's configuration")
    return raw


def _system_public(home: Path) -> str | None:
    path = system_key_path(home)
    return keys.public_text(keys.load_private(path).public_key()) if path.exists() else None


def _apply(ring: Keyring, op: str, args: dict) -> None:
    """One statement's effect on the derived keyring; raises ValueError for a statement that makes no sense."""
    if op in ("grant", "revoke", "password"):
        name = args["person"]
        found = ring.person(name)
        known, person = found or (name, Person())
        if op == "grant":
            person.keys = sorted(set(person.keys) | set(args.get("keys", [])))
            person.roles = sorted(set(person.roles) | set(args.get("roles", [])))
        elif found is None:
            raise ValueError(f"{op} for {name}, who is not in the keyring")
        elif op == "revoke":
            person.keys = [k for k in person.keys if k not in set(args.get("keys", []))]
            person.roles = [r for r in person.roles if r not in set(args.get("roles", []))]
        else:
            person.password = args["hash"]
        ring.people[known] = Person(**person.model_dump())
    elif op == "ui":
        ring.ui = UiAuth(**{**ring.ui.model_dump(), **{k: v for k, v in args.items() if k in UI_FIELDS}})
    elif op == "admin_add":
        keys.parse_public(args["key"], "admin key")
        ring.admins[args["name"]] = args["key"]
    elif op == "admin_remove":
        if args["name"] not in ring.admins or len(ring.admins) == 1:
            raise ValueError(f"cannot remove administrator {args['name']} (unknown, or the last one)")
        del ring.admins[args["name"]]
    else:
        raise ValueError(f"unknown statement op {op!r}")


def _statement_problem(ring: Keyring, i: int, st: Any, prev: str) -> str | None:
    if not isinstance(st, dict) or set(st) != {"body", "signer", "signature"}:
        return f"statement {i} is malformed"
    body = st["body"]
    if not isinstance(body, dict) or body.get("seq") != i or body.get("prev") != prev:
        return f"statement {i} does not chain onto the one before it (removed, inserted or moved)"
    who = ring.admin_of(st["signer"])
    if who is None or not keys.verify(st["signer"], body, st["signature"]):
        return (f"statement {i} ({body.get('op')} {body.get('args', {}).get('person', '')}) is not signed by a "
                "keyring administrator in force")
    return None


def derive(raw: dict, system_public: str | None) -> Keyring:
    """Verify the root and every statement, and return what they add up to (KeyringTampered names the first fault)."""
    root = raw.get("root")
    if not isinstance(root, dict):
        raise KeyringTampered("it has no root of trust (written by hand or by an older memgov): pin the "
                              "administrators with `memgov keys pin-admins` and grant again, signed")
    body = {k: v for k, v in root.items() if k != "seal"}
    seal = root.get("seal") or {}
    if system_public is None or seal.get("key") != system_public or not keys.verify(system_public, body,
                                                                                  seal.get("signature", "")):
        raise KeyringTampered("its root (the pinned administrators) is not sealed by this deployment's system key")
    if not isinstance(body.get("admins"), dict) or not body["admins"]:
        raise KeyringTampered("its root pins no administrator")
    ring = Keyring(system=system_public, admins=dict(body["admins"]))
    prev = digest_of(canonical_json(body))
    for i, st in enumerate(raw.get("statements") or [], start=1):
        problem = _statement_problem(ring, i, st, prev)
        if problem:
            raise KeyringTampered(problem)
        try:
            _apply(ring, st["body"]["op"], st["body"].get("args") or {})
        except (KeyError, TypeError, ValueError, ValidationError) as exc:
            raise KeyringTampered(f"statement {i} cannot be applied: {exc}") from None
        prev = digest_of(canonical_json(st["body"]))
    ring.head = prev
    return ring


def _differences(shown: dict, derived: Keyring) -> list[str]:
    """What the file's readable sections say beyond (or short of) the signed statements."""
    want = _view(derived)
    out = []
    for section in ("people", "ui", "admins"):
        got, exp = shown.get(section) or {}, want[section]
        if section == "ui":
            out += [f"ui.{k}: {got.get(k)!r} where the signed statements give {exp.get(k)!r}"
                    for k in sorted(set(got) | set(exp)) if got.get(k) != exp.get(k)]
            continue
        for name in sorted(set(got) | set(exp)):
            if name not in exp:
                out.append(f"{section}.{name} is in the file but no signed statement adds them")
            elif name not in got:
                out.append(f"{section}.{name} is missing from the file")
            elif got[name] != exp[name]:
                if section == "people" and isinstance(got[name], dict):
                    for field in ("keys", "roles", "password"):
                        a, b = got[name].get(field), exp[name].get(field)
                        if a != b:
                            extra = sorted(set(a or []) - set(b or [])) if field != "password" else "changed"
                            out.append(f"people.{name}.{field}: {extra or a!r} not granted by any signed statement"
                                       if extra else f"people.{name}.{field} differs from the signed statements")
                else:
                    out.append(f"{section}.{name} differs from the signed statements")
    return out


def _view(ring: Keyring) -> dict:
    return {"admins": dict(ring.admins),
            "people": {n: p.model_dump(exclude_none=True) for n, p in sorted(ring.people.items())},
            "ui": ring.ui.model_dump()}


def _fill_secret(home: Path, ring: Keyring) -> Keyring:
    path = secrets.ui_secret_path(home)
    if path.exists():
        ring.ui.secret = path.read_text(encoding="utf-8").strip() or None
    return ring


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_VERIFIED: dict[tuple, Keyring] = {}  # files' identities -> the keyring they verified to (the UI reads it per request)


def _identity(home: Path) -> tuple:
    """What a verified keyring depends on: the keyring file, the remembered head, the UI secret and the system key."""
    def stat(p: Path | None) -> tuple:
        try:
            st = p.stat() if p is not None else None
        except OSError:
            return ()
        return (st.st_ino, st.st_size, st.st_mtime_ns) if st else ()
    return (str(keyring_path(home)), stat(keyring_path(home)), stat(_head_path(home)),
            stat(secrets.ui_secret_path(home)), stat(system_key_path(home)))


def load(home: Path) -> Keyring:
    """The verified keyring (an empty one before any administrator is pinned); KeyringTampered when the file is
    not what its signed statements say, with each difference named. Verified once per version of its files."""
    ident = _identity(home)
    if ident in _VERIFIED:
        return _VERIFIED[ident].model_copy(deep=True)
    try:
        ring = _load(home)
    except KeyringTampered:
        with exclusive(_lock_path(home)):  # a change in progress writes the keyring, then its head: read it whole
            ring = _load(home)
    _VERIFIED.clear()
    _VERIFIED[ident] = ring.model_copy(deep=True)
    return ring


def _load(home: Path) -> Keyring:
    path = keyring_path(home)
    raw = _read_file(home)
    head_file = _head_path(home)
    remembered = head_file.read_text().strip() if head_file is not None and head_file.exists() else None
    unpinned = raw is None or not any(raw.get(k) for k in ("root", "statements", "people", "admins"))
    if unpinned and remembered:
        raise KeyringTampered(f"keyring {path} is missing or emptied, but the secrets remember its administrators "
                              "and statements: restore it")
    if unpinned:  # nothing pinned yet: ui defaults, nobody holds a role
        return _fill_secret(home, Keyring(system=_system_public(home)))
    try:
        ring = derive(raw, _system_public(home))
    except KeyringTampered as exc:
        raise KeyringTampered(f"keyring {path} refused: {exc}") from None
    diffs = _differences(raw, ring)
    if diffs:
        raise KeyringTampered(f"keyring {path} was edited by hand: " + "; ".join(diffs) + ". Restore it (the "
                              "signed statements in it are intact) and make changes with `memgov keys`, signed by "
                              "an administrator")
    if remembered and remembered != ring.head:
        raise KeyringTampered(f"keyring {path} is not the newest one: its last signed statement is not the one the "
                              "secrets folder remembers (an older copy was put back, or statements were cut); "
                              "restore the newest keyring")
    return _fill_secret(home, ring)


# -- writing ---------------------------------------------------------------------------
def _write(home: Path, raw: dict, ring: Keyring) -> None:
    path = keyring_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"root": raw["root"], "statements": raw.get("statements") or [], **_view(ring)}
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(HEADER + yaml.safe_dump(doc, sort_keys=True))
    tmp.replace(path)
    head_file = _head_path(home)
    if head_file is not None:
        secrets.write_private(head_file, (ring.head or "").encode())


def pin_admins(home: Path, admins: dict[str, str]) -> Keyring:
    """Pin the keyring administrators, once: the root is sealed by the system key, which only the holder of the
    deployment's secrets has. Later changes to the administrators are signed statements (`memgov keys admins`)."""
    if not admins:
        raise ValueError("--admin: name at least one administrator as NAME=ed25519:… (`memgov keys new` prints one)")
    for name, public in admins.items():
        if not name.strip():
            raise ValueError("--admin: give each administrator a name, NAME=ed25519:…")
        keys.parse_public(public, f"--admin {name}")
    raw = _read_file(home) or {}
    if raw.get("root") or raw.get("people") or raw.get("statements"):
        raise ValueError(f"keyring {keyring_path(home)} already has its administrators pinned; change them with "
                         "`memgov keys admins --add/--remove … --by ADMIN_KEY`")
    key = system_key(home)
    body = {"admins": dict(admins), "pinned_at": _now()}  # the sealing key is named in the seal: rotation re-seals
    root = {**body, "seal": keys.sign(key, body)}
    ring = derive({"root": root}, keys.public_text(key.public_key()))
    _write(home, {"root": root, "statements": []}, ring)
    return _fill_secret(home, ring)


def reseal_root(home: Path, key: Ed25519PrivateKey) -> None:
    """Seal the root again under a new system key (a rotation); the administrators and statements stay as they are."""
    raw = _read_file(home)
    if not raw or not raw.get("root"):
        return
    body = {k: v for k, v in raw["root"].items() if k != "seal"}
    root = {**body, "seal": keys.sign(key, body)}
    new_raw = {"root": root, "statements": raw.get("statements") or []}
    _write(home, new_raw, derive(new_raw, keys.public_text(key.public_key())))


def sign_change(home: Path, admin_key: Ed25519PrivateKey, op: str, args: dict, reason: str) -> tuple[Keyring, dict]:
    """Append one statement signed by an administrator and rewrite the derived sections; returns the new keyring
    and the statement (its digest goes into the change-log event)."""
    if op not in OPS:
        raise ValueError(f"op {op!r}: one of {', '.join(OPS)}")
    with exclusive(_lock_path(home)):  # two changes at once: both kept, in order
        return _sign_change(home, admin_key, op, args, reason)


def _sign_change(home: Path, admin_key: Ed25519PrivateKey, op: str, args: dict, reason: str) -> tuple[Keyring, dict]:
    raw = _read_file(home)
    if not raw or not raw.get("root"):
        raise ValueError("no keyring administrators are pinned for this deployment: pin them with `memgov keys "
                         "pin-admins --admin NAME=ed25519:…` (it needs the deployment's secrets)")
    ring = _load(home)  # under the lock already: read it directly
    admin = ring.require_admin(admin_key, "a keyring change")
    statements = list(raw.get("statements") or [])
    body = {"seq": len(statements) + 1, "prev": ring.head, "op": op, "args": args, "time": _now(), "reason": reason}
    signed = keys.sign(admin_key, body)
    statement = {"body": body, "signer": signed["key"], "signature": signed["signature"]}
    new_raw = {"root": raw["root"], "statements": [*statements, statement]}
    new = derive(new_raw, ring.system)
    _write(home, new_raw, new)
    return _fill_secret(home, new), {"admin": admin, "digest": new.head, "seq": body["seq"]}


# -- the system key and the UI secret ----------------------------------------------------
def system_key(home: Path) -> Ed25519PrivateKey:
    """The deployment's system key, created with the secrets folder (and the UI secret) on first use."""
    problem = secrets.legacy_problem(home)
    if problem:
        raise keys.KeyFileError(problem)
    path = system_key_path(home)
    if not path.exists():
        raw = _read_file(home) or {}
        if raw.get("root"):
            raise keys.KeyFileError(f"the keyring is sealed by a system key but {path} is missing; mount the deployment's "
                                 "system key there (MEMGOV_SYSTEM_KEY or MEMGOV_SECRETS) — a new one would not match "
                                 "its signatures")
        secrets.ensure_dir(home)
        keys.generate(path)
    secrets.check_private(path)
    ui = secrets.ui_secret_path(home)
    if not ui.exists() and not os.environ.get("MEMGOV_UI_SECRET_FILE"):
        secrets.write_private(ui, token.token_hex(32).encode())
    return keys.load_private(path)


def rotate_ui_secret(home: Path) -> None:
    secrets.write_private(secrets.ui_secret_path(home), token.token_hex(32).encode())


def log_problems(home: Path, events: list[dict]) -> list[str]:
    """The keyring crossed with the change log: every signed statement the log recorded is in the keyring, and
    the keyring ends at the newest one (a keyring put back from before a revocation is found here too)."""
    raw = _read_file(home)
    logged = [e for e in events if e["action"].startswith("keyring.") and
              ((e.get("details") or {}).get("statement") or e["action"] == "keyring.admins_pinned")]
    if raw is None or not raw.get("root"):
        return [f"the log records keyring changes (event {logged[-1]['seq']}) but the keyring has no root"] \
            if logged else []
    try:
        ring = derive(raw, _system_public(home))
    except KeyringTampered as exc:
        return [f"keyring: {exc}"]
    chain = {digest_of(canonical_json({k: v for k, v in raw["root"].items() if k != "seal"}))}
    chain |= {digest_of(canonical_json(st["body"])) for st in raw.get("statements") or []}
    problems = [f"keyring change of change-log event {e['seq']} ({e['action']} {e['object']}) is not in the keyring"
                for e in logged if (e["details"].get("statement") or {}).get("digest", e["details"].get("root"))
                not in chain]
    if logged:
        last = logged[-1]["details"]
        newest = (last.get("statement") or {}).get("digest", last.get("root"))
        if newest != ring.head:
            problems.append(f"the keyring does not end at the change the log recorded last (event "
                            f"{logged[-1]['seq']}): statements were cut, or an older keyring was put back")
    return problems
