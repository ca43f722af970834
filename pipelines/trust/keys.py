"""Ed25519 keys: a person's key signs their decisions, the deployment's system key signs what the pipeline does.

Public keys travel as "ed25519:<base64 of the 32 raw bytes>", so a keyring is readable YAML; private keys are
PKCS#8 PEM files written mode 600. Signatures are over canonical JSON, so the same statement always signs to
bytes anyone can recompute.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from pipelines.core.digests import canonical_json

PREFIX = "ed25519:"


class KeyFileError(ValueError):
    """A key that cannot be read or used; the message names the file or field and the fix."""


def public_text(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PREFIX + base64.b64encode(raw).decode()


def key_id(public: str) -> str:
    """A short stable name for a public key (what logs and approvals record)."""
    return "k:" + hashlib.sha256(public.encode()).hexdigest()[:16]


def parse_public(text: str, where: str = "key") -> Ed25519PublicKey:
    if not isinstance(text, str) or not text.startswith(PREFIX):
        raise KeyFileError(f"{where}: a public key is 'ed25519:<base64>' (as `memgov keys new` prints it)")
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text[len(PREFIX):], validate=True))
    except ValueError:
        raise KeyFileError(f"{where}: {text[:24]}… is not a valid Ed25519 public key") from None


def generate(path: Path) -> str:
    """Write a new private key to `path` (mode 600, never overwritten); returns the public key text."""
    path = Path(path)
    if path.exists():
        raise KeyFileError(f"{path} exists; a key file is never overwritten (choose another path)")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return public_text(key.public_key())


def load_private(path: str | Path) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist; create one with `memgov keys new {path}`") from None
    except (ValueError, TypeError):
        raise KeyFileError(f"key file {path} is not an unencrypted Ed25519 PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"key file {path} holds a {type(key).__name__}; memgov signs with Ed25519 keys only")
    return key


def sign(key: Ed25519PrivateKey, statement: Any) -> dict[str, str]:
    """Signature of the statement's canonical JSON, with the public key that checks it."""
    signature = key.sign(canonical_json(statement))
    return {"key": public_text(key.public_key()), "signature": base64.b64encode(signature).decode()}


def verify(public: str, statement: Any, signature: str) -> bool:
    try:
        parse_public(public).verify(base64.b64decode(signature, validate=True), canonical_json(statement))
    except (InvalidSignature, ValueError, KeyFileError):
        return False
    return True
