"""Finish what a killed process left half-done in release and promotion, on the next start (under the cycle lock),
and refuse to start on a champion pointer the log did not record.

Each multi-step change leaves a trace that says how far it got, and each step is safe to repeat:
- a champion move logged as an intent (`release.promotion_started`): completed when the pointer holds the intended
  record, abandoned otherwise (Registry.recover);
- a promotion that owed a canary (`owed: ["canary"]` in its events) with no verdict: the canary runs now, and acts
  on its verdict as it would have;
- an `approved` release that was never promoted: promoted now if it was judged against the champion still in
  service; otherwise it stays `approved` (one a rollback may bring back) and the lapse is logged once;
- a registered candidate whose batch was never marked processed: finished from its own card's gate verdict
  (gate event, rejection, batch processed, approval request or auto-approval), so a re-run never builds a second
  release for the same batch.
"""

from __future__ import annotations

from typing import Any

from pipelines.cycle.release_stage import finish_release
from pipelines.cycle.stages import PROCESSED_KEY
from pipelines.deployment.workspace import Workspace
from pipelines.governance import promotion
from pipelines.governance.overrides import effective_policy
from policies import Policy

ACTOR = "system:recovery"


def recover(ws: Workspace, policy: Policy, run_id: str | None = None) -> list[str]:
    """Everything recovered, one line each (empty when nothing was half-done). Call only under the cycle lock:
    a change in flight in another process looks exactly like one a crash cut short."""
    done = []
    moved = ws.registry.recover()
    if moved:
        done.append(f"champion move {moved}")
    ws.registry.verify_champion()  # nothing is built on a pointer the log did not record (RecordTampered)
    done += _canary(ws, policy, run_id)
    done += _approved(ws, policy, run_id)
    done += _orphans(ws, policy, run_id)
    if done:
        ws.log.append(ACTOR, "cycle.recovered", ws.registry.champion() or "-", "; ".join(done), run_id=run_id)
    return done


def _canary(ws: Workspace, policy: Policy, run_id: str | None) -> list[str]:
    events = ws.log.events()
    promoted = next((e for e in reversed(events) if e["action"] in ("release.promoted", "release.rolled_back")), None)
    if promoted is None or "canary" not in (promoted["details"].get("owed") or []):
        return []  # a rollback, or a promotion that owes no canary (the first champion at init)
    rid = promoted["object"]
    if any(e["object"] == rid and e["action"].startswith("canary.") for e in events[promoted["seq"]:]):
        return []
    if ws.registry.champion() != rid:
        return []
    promotion.after_promotion(ws, policy, rid, promoted["details"].get("previous"), run_id)
    return [f"canary of {rid} run after its promotion"]


def _approved(ws: Workspace, policy: Policy, run_id: str | None) -> list[str]:
    out = []
    champion = ws.registry.champion()
    lapsed = {e["object"] for e in ws.log.events() if e["action"] == "release.approval_lapsed"}
    for release in ws.registry.list():
        if release.status != "approved" or release.parent is None:
            continue
        last = next((h for h in reversed(release.history) if h["to"] == "approved"), None)
        if release.parent != champion:
            if release.release_id not in lapsed:
                ws.log.append(ACTOR, "release.approval_lapsed", release.release_id,
                              f"approved against {release.parent}, but {champion} serves now; it stays approved "
                              "(a rollback may bring it back)", run_id=run_id)
                out.append(f"{release.release_id} approved against an earlier champion: lapse logged")
            continue
        actor = (last or {}).get("actor") or ACTOR
        promotion.promote_with_canary(ws, policy, release.release_id, actor,
                                       f"promotion after approval, finished by recovery: {(last or {}).get('reason')}",
                                       run_id)
        champion = ws.registry.champion()
        out.append(f"{release.release_id} approved but never promoted: promoted")
    return out


def _orphans(ws: Workspace, policy: Policy, run_id: str | None) -> list[str]:
    processed = set(ws.store.read_json(PROCESSED_KEY, default=[]))
    out = []
    for release in ws.registry.list():
        batch = (release.data_snapshots or {}).get("batch")
        if not batch or batch in processed or release.status not in ("candidate", "rejected"):
            continue
        card = _card(ws, release)
        decision = card.get("decision") if card else None
        if not isinstance(decision, dict) or "passed" not in decision:
            continue  # no recorded verdict: nothing to finish it from (it can never be approved either)
        failed = [v["metric"] for v in decision.get("verdicts") or [] if not v.get("passed")]
        eff = effective_policy(ws, policy, batch)
        finish_release(ws, eff, release.release_id, batch, bool(decision["passed"]), failed, "; ".join(failed),
                       card.get("metrics", {}), run_id)
        processed.add(batch)
        out.append(f"{release.release_id} of batch {batch} finished from its card's verdict")
    return out


def _card(ws: Workspace, release) -> dict[str, Any] | None:
    try:
        card = promotion.read_card(ws, release)
    except (KeyError, ValueError, FileNotFoundError):
        return None
    return card if isinstance(card, dict) else None
