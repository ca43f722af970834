"""Release attestations: an in-toto Statement naming the digests of everything a release is, in a DSSE envelope
signed with the deployment's system key at registration. `verify_release` re-checks the signature and re-hashes
every artifact, so a swapped manifest, weight file or card is found and named without trusting the store.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipelines.core.digests import DIGEST_RE, canonical_json
from pipelines.trust import keys

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://memgov.dev/release/v1"
ATTESTATIONS = "registry/attestations/"


def _pae(payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: the type is signed too, so a payload cannot be re-read as another kind."""
    t = PAYLOAD_TYPE.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def subjects(manifest: dict[str, Any], manifest_digest: str) -> list[dict[str, Any]]:
    """Every content-addressed artifact the manifest names, as in-toto subjects."""
    named = [("manifest", manifest_digest), ("weights", manifest["model"])]
    if manifest.get("evaluation_card"):
        named.append(("card", manifest["evaluation_card"]))
    named += [(f"adapter:{a.get('cycle') or i}", a["digest"]) for i, a in enumerate(manifest.get("adapters", []))
              if isinstance(a, dict) and DIGEST_RE.match(str(a.get("digest", "")))]
    return [{"name": n, "digest": {"sha256": d.split(":", 1)[1]}} for n, d in named]


def attest(key: Ed25519PrivateKey, manifest: dict[str, Any], manifest_digest: str) -> dict[str, Any]:
    statement = {"_type": STATEMENT_TYPE, "subject": subjects(manifest, manifest_digest),
                 "predicateType": PREDICATE_TYPE,
                 "predicate": {"release_id": manifest["release_id"], "created_by": manifest["created_by"],
                               "created_at": manifest["created_at"], "log_head": manifest.get("log_head")}}
    return resign(key, canonical_json(statement))


def resign(key: Ed25519PrivateKey, payload: bytes) -> dict[str, Any]:
    """The same statement in an envelope signed by another key (a system-key rotation)."""
    public = keys.public_text(key.public_key())
    return {"payloadType": PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": keys.key_id(public), "key": public,
                            "sig": base64.b64encode(key.sign(_pae(payload))).decode()}]}


def read_statement(envelope: dict[str, Any], system_public: str | None) -> tuple[dict[str, Any] | None, str]:
    """The statement if the system key signed it, else None and why."""
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
        sig = envelope["signatures"][0]
        ok = sig["key"] == system_public and keys.parse_public(sig["key"]).verify(
            base64.b64decode(sig["sig"], validate=True), _pae(payload)) is None
    except Exception:  # noqa: BLE001 - any malformed or failed signature reads as "not signed"
        ok = False
    if not ok:
        return None, "its attestation is not signed by the deployment's system key"
    return json.loads(payload), ""


def artifact_problems(store, name: str, digest: str) -> list[str]:
    """Re-hash one artifact (a blob, or a folder manifest and each of its files)."""
    try:
        data = store.get_bytes(digest)
    except KeyError:
        return [f"{name} {digest[:19]} is missing from the store"]
    except ValueError:  # the store re-hashes what it reads
        return [f"{name} {digest[:19]} is corrupt: its content no longer hashes to its digest"]
    try:
        folder = json.loads(data)
    except ValueError:
        return []
    if not (isinstance(folder, dict) and folder.get("kind") == "memgov.dir/v1"):
        return []
    problems = []
    for f in folder["files"]:
        try:
            store.get_bytes(f["digest"])
        except KeyError:
            problems.append(f"{name} file {f['path']} ({f['digest'][:19]}) is missing from the store")
        except ValueError:
            problems.append(f"{name} file {f['path']} ({f['digest'][:19]}) is corrupt or was swapped")
    return problems
