"""Promotion by compare-and-swap, the post-promotion canary, and the verdict on the forget requests a newly served
release carries (each through the request lifecycle)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from pipelines.core.failpoints import failpoint
from pipelines.deployment.artifacts import load_model
from pipelines.deployment.workspace import Workspace
from pipelines.forget.lifecycle import conclude
from pipelines.forget.verify import bounds, request_checks
from pipelines.forget.weights import release_after_move
from pipelines.model.knowledge import current_facts, qa, sample
from pipelines.model.lm import exact_match
from policies import Policy


class ApprovalRefused(ValueError):
    """An approval that the policy does not allow; the message says which rule and why."""


def read_card(ws: Workspace, release) -> dict[str, Any]:
    if not release.evaluation_card:
        return {}
    with tempfile.TemporaryDirectory(dir=ws.work_dir) as tmp:
        ws.store.get_dir(release.evaluation_card, Path(tmp) / "card")
        return json.loads((Path(tmp) / "card" / "card.json").read_text())


def refuse_if_stale(ws: Workspace, release) -> None:
    """A candidate's gates compared it with its parent: promoting it over any other champion would serve a model
    nobody compared with what is in service (and could bring back what the newer champion dropped)."""
    champion = ws.registry.champion()
    if release.parent != champion:
        raise ApprovalRefused(
            f"release {release.release_id} was judged against {release.parent or 'no champion'}, but the champion is "
            f"now {champion}; it cannot be promoted over a champion it was not compared with: re-run its cycle to "
            f"judge it against {champion}")


def canary(ws: Workspace, policy: Policy, release_id: str) -> tuple[bool, float]:
    """Re-check the release in service on a small sample of the current knowledge it was built on (its lineage):
    facts admitted for a candidate that was rejected are not knowledge this release was meant to have."""
    release = ws.registry.get(release_id)
    model, tokenizer = load_model(ws, release.model)
    tomb = ws.requests.tombstones()
    facts = [r for fid, r in sorted(current_facts(ws.data.rows("admitted")).items())
             if not tomb.has_fact(fid) and ws.registry.in_lineage(release, "row_ids", r["id"])]
    probe = [qa(r) for r in sample(facts, policy.evaluation.canary_size, seed=7)]
    if not probe:
        return True, 1.0
    recall = float(exact_match(model, tokenizer, [q["prompt"] for q in probe], [q["target"] for q in probe]).mean())
    return recall >= policy.evaluation.canary_min_recall, recall


def promote_with_canary(ws: Workspace, policy: Policy, release_id: str, actor: str, reason: str,
                        run_id: str | None = None) -> dict[str, Any]:
    refuse_if_stale(ws, ws.registry.get(release_id))
    previous = ws.registry.champion()
    if not ws.registry.promote(release_id, actor, reason, expected=previous, run_id=run_id, owed=["canary"]):
        raise RuntimeError(f"promotion of {release_id} lost a race: the champion moved away from {previous}")
    failpoint("release.promoted")
    return after_promotion(ws, policy, release_id, previous, run_id)


def after_promotion(ws: Workspace, policy: Policy, release_id: str, previous: str | None,
                    run_id: str | None = None) -> dict[str, Any]:
    """What follows a promotion: the old champion's weights released if tainted, the canary and its verdict.
    Recovery calls it again for a promotion whose canary verdict was never recorded."""
    release_after_move(ws, policy, "promotion", run_id)  # a tainted champion just left service: its weights go
    ok, recall = canary(ws, policy, release_id)
    ws.log.append("system:canary", "canary.passed" if ok else "canary.failed", release_id,
                  reason=f"recall {recall:.3f} vs minimum {policy.evaluation.canary_min_recall}", run_id=run_id)
    if not ok and previous is not None and ws.registry.status(previous) == "tainted":
        ws.log.append("system:canary", "canary.rollback_refused", release_id, run_id=run_id,
                      reason=f"previous champion {previous} is tainted by a forget request; {release_id} stays in service")
        return {"release_id": release_id, "status": "champion", "champion": ws.registry.champion(),
                "canary_recall": recall, "rollback_refused": previous}
    if not ok and previous is not None:
        why = f"canary failed on {release_id} (recall {recall:.3f})"
        ws.registry.rollback(previous, "system:canary", why, run_id=run_id)
        ws.registry.set_status(release_id, "withdrawn", "system:canary", why, run_id=run_id)
        fail_forget_requests(ws, release_id, [f"canary failed (recall {recall:.3f}); {release_id} withdrawn"])
        return {"release_id": release_id, "status": ws.registry.status(release_id), "champion": ws.registry.champion(),
                "canary_recall": recall, "rolled_back_to": previous}
    verify_forget_requests(ws, policy, release_id)
    return {"release_id": release_id, "status": "champion", "champion": ws.registry.champion(), "canary_recall": recall}


def verify_forget_requests(ws: Workspace, policy: Policy, release_id: str) -> list[str]:
    """Requests honoured by a newly served release become verified when every forgetting check held."""
    release = ws.registry.get(release_id)
    card = read_card(ws, release)
    metrics = card.get("metrics", {})
    done = []
    for rid in release.tombstones_honoured:
        req = ws.requests.get(rid)
        if req.state != "applied":
            continue
        checks = request_checks(policy, metrics, req.evidence)
        evidence = {"verification": {"release": release_id, "checks": checks, "bounds": bounds(policy),
                                     "forgetting": card.get("forgetting", {}), "metrics": metrics}}
        failed = [k for k, ok in checks.items() if not ok]
        conclude(ws, rid, "failed" if failed else "verified", evidence,
                 f"release {release_id}: " + (", ".join(failed) if failed else "all checks held"))
        done.append(rid)
    return done


def fail_forget_requests(ws: Workspace, release_id: str, reasons: list[str]) -> list[str]:
    """The release that carried these requests' forgetting left service: they fail, with the reason."""
    failed = []
    for rid in ws.registry.get(release_id).tombstones_honoured:
        if ws.requests.get(rid).state == "applied":
            conclude(ws, rid, "failed", {"verification": {"release": release_id, "reasons": reasons}}, "; ".join(reasons))
            failed.append(rid)
    return failed
