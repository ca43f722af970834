"""The policy in force belongs to the deployment, not to whoever runs a command.

`memgov init` adopts a policy; from then on its content (not a file name that can be edited behind its back) is the
deployment's record, and the change log's last `policy.adopted` event names its digest. Every cycle and decision
runs on that record. A command or launch that asks for another policy is refused with the way to change it: a
signed `memgov policy adopt` by a role the policy in force names, itself logged.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.deployment.workspace import Workspace
from policies import Policy, load_policy
from policies.schema import PolicyError, parse_policy

RECORD = "deployment/policy.json"
EVENT = "policy.adopted"


class PolicyNotInForce(ValueError):
    """A policy other than the deployment's was asked for, or the deployment's record does not match its log."""


def _content_digest(content: Any) -> str:
    blob = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def policy_digest(policy: Policy) -> str:
    return _content_digest(policy.model_dump(mode="json"))


def adopted_record(ws: Workspace) -> dict[str, Any] | None:
    return ws.store.read_json(RECORD, default=None)


def _last_adoption(ws: Workspace) -> dict[str, Any] | None:
    found = None
    for event in ws.log.events():
        if event.get("action") == EVENT:
            found = event
    return found


def adopt(ws: Workspace, policy: Policy, actor: str, reason: str, role: str | None = None,
          proof: dict[str, str] | None = None) -> dict[str, Any]:
    """Make `policy` the deployment's: its content is stored and the change is logged with both digests."""
    previous = adopted_record(ws)
    digest = policy_digest(policy)
    record = {"label": policy.label, "sha256": digest, "policy": policy.model_dump(mode="json"), "adopted_by": actor,
              "role": role, "reason": reason, "time": datetime.now(UTC).isoformat(timespec="seconds")}
    ws.store.write_json(RECORD, record)
    ws.log.append(actor, EVENT, policy.label, reason=reason,
                  details={"sha256": digest, "role": role,
                           "previous": {"label": previous["label"], "sha256": previous["sha256"]} if previous else None,
                           **({"signed": proof} if proof else {})})
    return {"label": policy.label, "sha256": digest, "previous": previous["label"] if previous else None}


def deployed_policy(ws: Workspace) -> Policy | None:
    """The adopted policy, checked against the log; None for a home that never adopted one (no deployment yet)."""
    record = adopted_record(ws)
    last = _last_adoption(ws)
    if record is None:
        if last is not None:
            raise PolicyNotInForce(f"the change log adopted policy {last['object']} (event {last['seq']}) but the "
                                   f"deployment's policy record ({RECORD}) is missing: restore it from a backup")
        return None
    # The stored content is what was adopted: a newer memgov that adds a field with a default reads it the same.
    digest = _content_digest(record.get("policy"))
    logged = (last or {}).get("details", {}).get("sha256")
    if digest != record.get("sha256") or digest != logged:
        where = f"event {last['seq']} adopted {last['object']}" if last else "no adoption is logged"
        raise PolicyNotInForce(f"the deployment's policy record ({RECORD}) is not the policy last adopted in the "
                               f"change log ({where}); nothing runs on it: restore the record or adopt a policy "
                               "with `memgov policy adopt`")
    try:
        return parse_policy(record.get("policy"), f"the deployment's policy record ({RECORD})")
    except PolicyError as exc:
        raise PolicyNotInForce(str(exc)) from None


def policy_in_force(ws: Workspace, requested: str | Path | None = None) -> Policy:
    """The deployment's policy; `requested` (a --policy option, MEMGOV_POLICY, a resource field) must be the same
    policy or the call is refused. Before any adoption, the requested policy (or the default) is used."""
    adopted = deployed_policy(ws)
    if adopted is None:
        return load_policy(requested or "default")
    if requested:
        asked = load_policy(requested)
        if policy_digest(asked) != policy_digest(adopted):
            raise PolicyNotInForce(
                f"this deployment runs policy {adopted.label}; policy '{requested}' ({asked.label}) is not in force "
                f"and cannot be chosen per command: drop --policy/MEMGOV_POLICY, or change the deployment's policy "
                f"with `memgov policy adopt {requested} --key FILE --role ROLE --reason TEXT` (a role in "
                f"approval.policy_roles: {', '.join(adopted.approval.policy_roles) or 'none'})")
    return adopted


def adoptions(ws: Workspace) -> list[dict[str, Any]]:
    """Every adoption in the log, oldest first: which policy, when, by whom, why."""
    return [{"seq": e["seq"], "time": e["time"], "label": e["object"], "by": e["actor"], "reason": e.get("reason", ""),
             "sha256": (e.get("details") or {}).get("sha256")}
            for e in ws.log.events() if e.get("action") == EVENT]
