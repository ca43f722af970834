"""The release step: register the measured candidate, then act on the gate decision.

A candidate that fails its gates is registered and rejected here, as a verdict with its reasons, not as a failed
run; one that passes is auto-approved where the policy says so, otherwise it waits for an approver.
"""

from __future__ import annotations

import shutil
import time

from evals.gates import Decision
from pipelines.core.failpoints import failpoint
from pipelines.cycle.records import Measurement, ReleaseOutcome
from pipelines.cycle.stages import mark_processed
from pipelines.cycle.verdict import judge
from pipelines.deployment.workspace import Workspace
from pipelines.forget.lifecycle import conclude
from pipelines.forget.verify import request_verdicts
from pipelines.governance import approvals
from pipelines.governance.overrides import effective_policy
from pipelines.governance.submission import submitter
from policies import Policy


def gate_decision(ws: Workspace, policy: Policy, measurement: Measurement) -> Decision:
    """The decision under the policy in force for the measurement's batch."""
    return judge(measurement, effective_policy(ws, policy, measurement.batch))


def register(ws: Workspace, measurement: Measurement):
    """The candidate as a release, child of the champion it was measured against; its card copied beside the home."""
    m = measurement
    parent = ws.registry.get(m.champion) if m.champion else None
    if parent is None:
        raise RuntimeError("no champion release: run `memgov init --base-model PATH --data DIR` (or `memgov demo`) first")
    batch_rows = ws.data.rows("admitted", m.batch) if m.batch else []
    lineage = {
        "subject_ids": sorted(set(parent.lineage.get("subject_ids", []))
                              | {s for r in batch_rows for s in r.subject_ids}),
        "row_ids": sorted(set(parent.lineage.get("row_ids", [])) | {r.id for r in batch_rows}),
    }
    adapter = [{"digest": m.adapter, "method": m.adapter_method, "cycle": m.cycle}] if m.adapter else []
    release = ws.registry.create(
        {
            "parent": parent.release_id,
            "base_model": parent.base_model,
            "model": m.model,
            "adapters": [*parent.adapters, *adapter],
            "edits": [*parent.edits, *(e.model_dump() for e in m.edits)],
            "unlearning": [*parent.unlearning, *m.unlearning],
            "tombstones_honoured": sorted(set(parent.tombstones_honoured) | set(m.honoured)),
            "index_snapshot": m.index_snapshot,
            "policy_version": m.policy,
            "data_snapshots": {"admitted": ws.data.snapshot("admitted"), "batch": m.batch,
                               "submitted_by": submitter(ws, m.batch)},
            "lineage": lineage,
            "evaluation_card": m.card_digest,
            "cycle": m.cycle,
            "intermediates": m.intermediates,
        },
        actor=f"cycle:{m.cycle}",
        reason="candidate measured",
    )
    cards_dir = ws.home / "cards" / release.release_id
    shutil.rmtree(cards_dir, ignore_errors=True)
    ws.store.get_dir(m.card_digest, cards_dir)
    return release, cards_dir


def release_stage(ws: Workspace, policy: Policy, measurement: Measurement, run_id: str | None = None) -> ReleaseOutcome:
    t0 = time.perf_counter()
    eff = effective_policy(ws, policy, measurement.batch)
    decision = judge(measurement, eff)
    release, cards_dir = register(ws, measurement)
    failpoint("release.registered")
    rid = release.release_id
    outcome = {"cycle": measurement.cycle, "release_id": rid, "passed": decision.passed,
               "verdicts": [v.model_dump() for v in decision.verdicts], "metrics": measurement.metrics,
               "card_dir": str(cards_dir)}
    why = "; ".join(f"{v.metric} {v.value} vs {v.threshold}" for v in decision.failed)
    result = finish_release(ws, eff, rid, measurement.batch, decision.passed, [v.metric for v in decision.failed], why,
                            measurement.metrics, run_id, measurement=measurement)
    result = {k: v for k, v in result.items() if k != "release_id"}
    return ReleaseOutcome(**outcome, **result, seconds=round(time.perf_counter() - t0, 3))


def finish_release(ws: Workspace, eff: Policy, rid: str, batch: str | None, passed: bool, failed: list[str],
                   why: str, metrics: dict, run_id: str | None, measurement: Measurement | None = None) -> dict:
    """Act on a registered candidate's verdict: the gate event, a rejection, the batch marked processed, then
    auto-approval or the request for an approver. Each step is skipped when already done, so the recovery of a
    run killed after registration finishes the same release instead of building a second one."""
    done = {e["action"] for e in ws.log.events() if e["object"] == rid}
    if not done & {"gates.passed", "gates.failed"}:
        ws.log.append("system:gates", "gates.passed" if passed else "gates.failed", rid,
                      reason=why or "all gates passed", run_id=run_id, details={"metrics": metrics})
    if not passed and ws.registry.status(rid) == "candidate":
        ws.registry.set_status(rid, "rejected", "system:gates", "failed gates: " + ", ".join(failed), run_id=run_id)
    if batch:  # registered with its verdict: the batch's outcome is recorded, it is not taken again
        mark_processed(ws, batch)
    if not passed:
        if measurement is not None:
            settle_requests_after_rejection(ws, eff, rid, measurement, run_id)
        return {"status": "rejected", "champion": ws.registry.champion()}
    if ws.registry.status(rid) != "candidate":
        return {"status": ws.registry.status(rid), "champion": ws.registry.champion()}
    if eff.approval.mode == "auto":
        return approvals.decide_release(ws, eff, rid, "approve", eff.approval.auto_approver, "policy",
                                         "gates passed; policy auto-approves", run_id=run_id)
    if "approval.requested" not in done:
        ws.log.append("system:release", "approval.requested", rid, reason="gates passed; waiting for an approver",
                      run_id=run_id)
    return {"status": "candidate", "champion": ws.registry.champion(), "waiting_for": "approval"}


def settle_requests_after_rejection(ws: Workspace, policy: Policy, release_id: str, measurement: Measurement,
                                    run_id: str | None) -> None:
    """A request whose own checks failed is `failed` with the reasons; one rejected for other gates waits for the
    next candidate."""
    checks, _ = request_verdicts(policy, measurement.metrics, measurement.forget_evidence)
    card = measurement.card
    for rid in measurement.honoured:
        req = ws.requests.get(rid)
        failed = [k for k, ok in checks.get(rid, {}).items() if not ok]
        if failed and req.state in ("planned", "applied"):
            evidence = {"verification": {"release": release_id, "checks": checks[rid],
                                         "forgetting": card.get("forgetting", {}), "metrics": card["metrics"]}}
            conclude(ws, rid, "failed", evidence,
                     f"candidate {release_id} rejected, checks failed: {', '.join(failed)}; champion unchanged", run_id)
        elif not failed:
            conclude(ws, rid, "deferred", {},
                     f"forgetting held but {release_id} failed other gates; retried with the next candidate", run_id)
