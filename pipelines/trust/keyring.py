"""The deployment's keyring: which public key belongs to whom, and which roles each person is granted.

Identity is what the keyring says a key is, never what someone types: a signed decision names its key, the keyring
names the person and their roles. It is deployment configuration (`$MEMGOV_HOME/keyring.yaml`, or the file named by
MEMGOV_KEYRING, e.g. a mounted ConfigMap); the system key's private half lives apart from the artifact store
(`$MEMGOV_HOME/keys/system.key` or MEMGOV_SYSTEM_KEY, e.g. a mounted Secret).
"""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipelines.trust import keys

HEADER = ("# memgov keyring: who holds which key and which roles they are granted (deployment configuration;\n"
          "# change it with `memgov keys grant`, which logs the change). Public keys, password hashes and the UI's\n"
          "# sealing secret: readable by the deployment only (mode 600).\n")


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
    """How `memgov ui` learns who is at the browser."""

    model_config = ConfigDict(extra="forbid")
    trusted_proxies: list[str] = Field(default_factory=list)  # addresses whose identity header is believed
    user_header: str = "X-Forwarded-User"
    local_login: bool = False  # username + password (people.*.password) at /memgov/login
    secret: str | None = None  # signs session cookies and run identity tags; created with the keyring

    @property
    def configured(self) -> bool:
        return bool(self.trusted_proxies) or self.local_login


class Keyring(BaseModel):
    model_config = ConfigDict(extra="forbid")
    system: str | None = None
    people: dict[str, Person] = Field(default_factory=dict)
    ui: UiAuth = Field(default_factory=UiAuth)

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


def keyring_path(home: Path) -> Path:
    return Path(os.environ.get("MEMGOV_KEYRING") or Path(home) / "keyring.yaml")


def system_key_path(home: Path) -> Path:
    return Path(os.environ.get("MEMGOV_SYSTEM_KEY") or Path(home) / "keys" / "system.key")


def load(home: Path) -> Keyring:
    path = keyring_path(home)
    if not path.exists():
        return Keyring()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return Keyring(**raw)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise keys.KeyError_(f"keyring {path} is not readable YAML ({exc}); restore it from the deployment's "
                             "configuration") from None
    except (ValidationError, TypeError) as exc:
        raise keys.KeyError_(f"keyring {path} is invalid: {exc}") from None


def save(home: Path, ring: Keyring) -> None:
    path = keyring_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(HEADER + yaml.safe_dump(ring.model_dump(exclude_none=True), sort_keys=True))
    tmp.replace(path)


def system_key(home: Path) -> Ed25519PrivateKey:
    """The deployment's system key, created with the keyring on first use; the keyring must name its public half."""
    import secrets

    path = system_key_path(home)
    ring = load(home)
    if not path.exists():
        if ring.system:
            raise keys.KeyError_(f"the keyring names a system key but {path} is missing; mount the deployment's "
                                 "system key there (MEMGOV_SYSTEM_KEY) — a new one would not match its signatures")
        ring.system = keys.generate(path)
        ring.ui.secret = ring.ui.secret or secrets.token_hex(32)
        save(home, ring)
    key = keys.load_private(path)
    public = keys.public_text(key.public_key())
    if ring.system is None:
        ring.system = public
        ring.ui.secret = ring.ui.secret or secrets.token_hex(32)
        save(home, ring)
    elif ring.system != public:
        raise keys.KeyError_(f"{path} is not the system key the keyring names ({keys.key_id(ring.system)}); "
                             "mount the matching key")
    return key
