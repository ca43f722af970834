"""Rotating the deployment's system key: everything it sealed is sealed again under the new key, then the key is
swapped, then the rotation is logged with the new digests.

What the system key seals: every release's status record and attestation, the champion pointer, the keyring's root
and the log witness. Lineage ids stay hashed under the key they were hashed with (pinned as `lineage.key` with the
secrets on the first rotation), so forgotten ids keep matching the lineage of existing releases. Ordered so that a
crash part-way fails closed (documents sealed by a key the deployment does not hold yet are refused) and running
the rotation again finishes it. Run it with no cycle running; it holds the cycle lock.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from pipelines.core import secrets
from pipelines.core.digests import canonical_json, digest_of
from pipelines.deployment.registry.registry import CHAMPION_KEY, Registry, derived_lineage_key
from pipelines.deployment.workspace import Workspace
from pipelines.trust import attest, keys
from pipelines.trust import keyring as kr


def rotate_system_key(ws: Workspace, admin_key: Ed25519PrivateKey, reason: str,
                      new_key: Path | None = None) -> dict:
    """Re-seal under a new system key; `new_key`: a key file made elsewhere (production mounts it as the Secret
    afterwards), else one is made in the secrets folder. Only a keyring administrator may order it."""
    if not reason.strip():
        raise ValueError("reason: say why the system key is rotated (it is logged)")
    admin = ws.keyring().require_admin(admin_key, "a system-key rotation")
    old = ws.system_key
    problems = ws.registry.pointer_problems()
    if problems:
        raise ValueError("refusing to re-seal a pointer that does not verify: " + "; ".join(problems))
    lineage = secrets.lineage_key_path(ws.home)
    if not lineage.exists():  # production: written beside the new key, to be mounted as MEMGOV_LINEAGE_KEY
        lineage = new_key.with_name("lineage.key") if new_key is not None else lineage
        secrets.write_private(lineage, derived_lineage_key(old))
    next_path = secrets.system_key_path(ws.home).with_name("system.key.next")
    if new_key is not None:
        new = keys.load_private(new_key)
    else:
        if not next_path.exists():
            keys.generate(next_path)
        new = keys.load_private(next_path)
    old_public, new_public = keys.public_text(old.public_key()), keys.public_text(new.public_key())
    if old_public == new_public:
        raise ValueError("the new system key is the one in use; make a new one (`memgov keys new FILE`)")
    sealer = Registry(ws.store, ws.log, signer=new, lineage_key=lineage.read_bytes())
    records = {}
    for rid in ws.registry.release_ids():
        records[rid] = digest_of(canonical_json(sealer._update(rid, lambda r: r)))
        envelope = ws.store.read_json(attest.ATTESTATIONS + rid, default=None)
        if envelope is not None:
            statement, why = attest.read_statement(envelope, old_public)
            if statement is None:
                statement, why = attest.read_statement(envelope, new_public)  # an earlier run re-signed it
            if statement is None:
                raise ValueError(f"release {rid}: {why}; restore it before rotating")
            payload = base64.b64decode(envelope["payload"])
            ws.store.write_json(attest.ATTESTATIONS + rid, attest.resign(new, payload))
    text = ws.store.read_text(CHAMPION_KEY)
    pointer = None
    if text is not None:
        body = {k: v for k, v in json.loads(text).items() if k != "seal"}
        resealed = json.dumps(sealer._seal(body), sort_keys=True)
        if not ws.store.compare_and_swap(CHAMPION_KEY, text, resealed):
            raise RuntimeError("the champion pointer moved during the rotation; run it again with no cycle running")
        pointer = digest_of(resealed.encode())
    kr.reseal_root(ws.home, new)
    if ws.log.witness is not None:
        ws.log.witness.reseal(lambda: new)
    if new_key is None:  # the commit point: from here the deployment holds the new key
        secrets.write_private(secrets.system_key_path(ws.home), next_path.read_bytes())
        next_path.unlink()
    ws.__dict__["system_key"] = new
    ws.__dict__.pop("registry", None)
    details = {"old": keys.key_id(old_public), "new": keys.key_id(new_public), "records": records}
    ws.log.append(admin, "secrets.system_key_rotated", "system-key", reason,
                  details={**details, **({"pointer": pointer} if pointer else {})})
    return {"old": keys.key_id(old_public), "new": keys.key_id(new_public), "records": len(records),
            "pointer": pointer is not None, "installed": new_key is None, "lineage_key": str(lineage)}
