"""A batch's own training settings (`<batch>.policy.json` beside it), limited to what the policy lets data change.

Whoever can drop a batch must not be able to lower a gate or switch off approval, so a sidecar may only set the
training hyper-parameters the deployment's policy lists under `batch_overrides`. It is reviewed once, when the
batch is admitted: an allowed one is logged with its content hash and applies to every stage of that cycle (and is
shown on the card); any other key sends the whole sidecar to quarantine with the reasons while the batch itself is
admitted under the deployment's policy.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from pipelines.deployment.workspace import Workspace
from policies import Policy, PolicyError, merge_overrides

RECORD = "cycles/overrides/{batch}.json"
MAX_BYTES = 64_000


class BatchOverrides(BaseModel):
    """The review of one sidecar: what applies to the batch's cycle, or why nothing does."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch: str
    file: str
    sha256: str
    applied: dict[str, Any]  # dotted key -> value
    refused: list[str]  # reasons; non-empty means the sidecar was quarantined and nothing applies


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """{"update": {"params": {"learning_rate": 0.1}}} -> {"update.params.learning_rate": 0.1}."""
    if not isinstance(value, dict) or not value:
        return {prefix: value} if prefix else {}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def review(ws: Workspace, policy: Policy, batch: str, run_id: str | None = None) -> BatchOverrides | None:
    """Read the batch's sidecar once, keep what the policy allows, quarantine it whole otherwise; None when absent."""
    path = ws.inbox / f"{batch}.policy.json"
    if not path.is_file():
        return None
    raw = path.read_bytes()[: MAX_BYTES + 1]
    digest = hashlib.sha256(raw).hexdigest()
    reasons: list[str] = []
    flat: dict[str, Any] = {}
    try:
        if len(raw) > MAX_BYTES:
            raise ValueError(f"larger than {MAX_BYTES} bytes")
        data = json.loads(raw.decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"a JSON object of policy sections is expected, got {type(data).__name__}")
        flat = flatten(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deep to read
        reasons.append(f"unreadable: {exc}")
    allowed = set(policy.batch_overrides)
    reasons += [f"'{key}' may not be set by a batch; the policy's batch_overrides allow: "
                f"{', '.join(sorted(allowed)) or 'nothing'}" for key in sorted(flat) if key not in allowed]
    if not reasons:
        try:
            merge_overrides(policy, nest(flat), path.name)
        except PolicyError as exc:
            reasons.append(str(exc))
    record = BatchOverrides(batch=batch, file=path.name, sha256=digest, applied={} if reasons else flat,
                            refused=reasons)
    if reasons:
        text = raw.decode("utf-8", errors="replace")[:4000]
        ws.data.put_part("quarantine", f"{batch}.policy", [{"id": path.name, "quarantine_reasons": reasons,
                                                            "content": text, "sha256": digest}])
        path.unlink()
        ws.log.append("system:admission", "batch.overrides_refused", batch, reason="; ".join(reasons), run_id=run_id,
                      details={"sha256": digest, "keys": sorted(flat)})
    else:
        ws.log.append("system:admission", "batch.overrides_applied", batch,
                      reason=", ".join(f"{k}={v}" for k, v in flat.items()), run_id=run_id,
                      details={"sha256": digest, "overrides": flat})
    ws.store.write_json(RECORD.format(batch=batch), record.model_dump())
    return record


def reviewed(ws: Workspace, batch: str) -> BatchOverrides | None:
    found = ws.store.read_json(RECORD.format(batch=batch), default=None) if batch else None
    return BatchOverrides(**found) if found else None


def effective_policy(ws: Workspace, policy: Policy, batch: str) -> Policy:
    """The deployment's policy plus the batch's reviewed overrides (still only the keys the policy allows)."""
    record = reviewed(ws, batch)
    if record is None or not record.applied:
        return policy
    allowed = {k: v for k, v in record.applied.items() if k in set(policy.batch_overrides)}
    return merge_overrides(policy, nest(allowed), f"{record.file} (sha256 {record.sha256[:12]})")
