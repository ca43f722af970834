"""Process one forget request: plan, hold if too broad, scrub every store (journaled), taint, check the index.

Every path ends in a state a person can act on: `verified`, `planned` (scrubbed, model-side forgetting pending),
`held` (a named role must confirm a broad plan), `failed` (with reasons; `memgov forget retry`), or `planned` with
an incomplete journal that the next attempt resumes. Nothing here fails open.
"""

from __future__ import annotations

import json
from typing import Any

from pipelines.deployment.artifacts import load_index
from pipelines.deployment.workspace import Workspace
from pipelines.forget import lifecycle
from pipelines.forget.filing import filed_signer
from pipelines.forget.plan import ForgetPlan, resolve_selector
from pipelines.forget.scrub import (
    ACTOR,
    Journal,
    ScrubBusy,
    attempts_made,
    inbox_holds,
    journal,
    run_steps,
    scrub_complete,
)
from pipelines.forget.weights import release_after_move, tainted_weights_left
from pipelines.trust.decisions import SignatureRefused
from pipelines.trust.keyring import same_person
from policies import Policy
from policies.schema import UnlearningSection


def index_returns_forgotten(ws: Workspace, plan: ForgetPlan, embedder, k: int = 3) -> list[str]:
    """The serving index must hold none of the covered documents, and (with an embedder) must not return any of
    them for the forgotten facts' own questions."""
    champion = ws.registry.champion()
    if champion is None:
        return []
    index = load_index(ws, ws.registry.get(champion).index_snapshot)
    covered = plan.doc_ids | plan.row_ids
    held = set(covered & set(index.doc_ids())) | set(index.select_where(plan.subject_ids, plan.fact_ids))
    if plan.forget_qas and embedder is not None:
        hits = index.search([q["prompt"] for q in plan.forget_qas], embedder, k=k)
        held |= {h.doc_id for row in hits for h in row if h.doc_id in covered}
    return sorted(held)


def _plain(selector) -> dict:
    return selector if isinstance(selector, dict) else selector.model_dump()


def _rules(policy: Policy | None) -> UnlearningSection:
    return policy.unlearning if policy is not None else UnlearningSection(method="grad_diff")


def dry_run_report(ws: Workspace, plan: ForgetPlan, policy: Policy | None) -> dict[str, Any]:
    """What a request would remove, store by store, and whether the policy needs a confirmation first."""
    from pipelines.deployment.artifacts import index_holds

    rules = _rules(policy)
    shares = plan.shares()
    over = {k: round(v, 4) for k, v in shares.items() if v > rules.max_share}
    index = index_holds(ws, plan.doc_ids | plan.row_ids, plan.subject_ids, plan.fact_ids)
    return {
        "dry_run": True,
        "stores": {"tables": dict(plan.per_table),
                   "index_snapshots": {v: len(d) for v, d in index.items()},
                   "inbox": inbox_holds(ws.pull_inbox(), plan)},
        "tombstones": {k: len(v) for k, v in plan.ids().items()},
        "facts_for_the_model_to_forget": len(plan.forget_qas),
        "share": {k: round(v, 4) for k, v in shares.items()},
        "max_share": rules.max_share,
        "confirmation_needed": (
            {"because": {k: f"{v:.1%} > {rules.max_share:.1%}" for k, v in over.items()},
             "roles": list(rules.confirm_roles),
             "how": "memgov forget confirm ID --by NAME --role ROLE --reason TEXT"} if over else None),
    }


def _fail(ws: Workspace, request_id: str, reason: str, evidence: dict[str, Any], run_id: str | None) -> dict[str, Any]:
    lifecycle.fail(ws, request_id, reason, evidence, run_id, actor=ACTOR)
    return {"request_id": request_id, "state": "failed", "reason": reason}


def _plan_or_hold(ws: Workspace, req, rules: UnlearningSection, run_id: str | None) -> ForgetPlan | dict[str, Any]:
    try:
        plan = resolve_selector(ws.data, req.selector)
    except Exception as exc:  # noqa: BLE001 - a request that cannot be planned fails with the reason, retryable
        return _fail(ws, req.request_id, f"planning failed: {type(exc).__name__}: {exc}", {}, run_id)
    shares = plan.shares()
    over = {k: v for k, v in shares.items() if v > rules.max_share}
    confirmed = (req.evidence or {}).get("confirmation")
    if over and not confirmed:
        why = ", ".join(f"{k} {v:.1%}" for k, v in sorted(over.items()))
        note = f"plan covers {why} of the deployment (policy max_share {rules.max_share:.0%}); " \
               f"a {' or '.join(rules.confirm_roles)} must confirm it"
        lifecycle.hold(ws, req.request_id, {"plan_summary": plan.summary(), "shares": shares,
                                            "confirmation_needed": list(rules.confirm_roles)}, note, run_id,
                       details={"shares": {k: round(v, 4) for k, v in shares.items()}})
        return {"request_id": req.request_id, "state": "held", "reason": note}
    # The journal's plan is written with the state change itself: a planned request always knows what to scrub.
    started = {**journal(ws.requests.get(req.request_id).evidence), "plan": plan.ids(), "done": {}, "stale": [],
               "complete": False}
    lifecycle.planned(ws, req.request_id, {"plan": {**plan.summary(), "forget_qas": plan.forget_qas},
                                           "journal": started}, note="selector resolved")
    return plan


def process_request(ws: Workspace, request_id: str, embedder=None, dry_run: bool = False,
                    run_id: str | None = None, policy: Policy | None = None) -> dict[str, Any]:
    """Idempotent: a request whose scrub is complete is reported, not processed again; one whose scrub stopped
    part-way is resumed from its journal."""
    rules = _rules(policy)
    req = ws.requests.get(request_id)
    if dry_run:
        plan = resolve_selector(ws.data, req.selector)
        return {"request_id": request_id, **dry_run_report(ws, plan, policy)}
    if req.state in ("held", "applied", "verified", "failed") or (req.state == "planned" and scrub_complete(req.evidence)):
        return {"request_id": request_id, "state": req.state, "already_processed": True}
    j = Journal(ws, request_id)
    try:
        attempt = j.claim(run_id)
    except ScrubBusy as exc:
        return {"request_id": request_id, "state": req.state, "busy": str(exc)}
    if req.state == "received":
        try:
            filed_signer(ws, req)
        except SignatureRefused as exc:
            j.end(error=str(exc), step="plan")
            return _fail(ws, request_id, f"not scrubbed: {exc}", {}, run_id)
    try:
        if req.state == "received":
            planned = _plan_or_hold(ws, req, rules, run_id)
            if isinstance(planned, dict):
                j.end()
                return planned
            plan = planned
        else:
            plan = ForgetPlan.from_ids(journal(req.evidence).get("plan") or {})
            plan.forget_qas = list((req.evidence or {}).get("plan", {}).get("forget_qas", []))
        done = run_steps(ws, request_id, plan, run_id, policy=policy, embedder=embedder)
    except Exception as exc:  # noqa: BLE001 - recorded, logged, and left for the next attempt
        step = getattr(exc, "memgov_step", "plan")
        error = f"{type(exc).__name__}: {exc}"
        j.end(error=error, step=step)
        ws.log.append(ACTOR, "forget.scrub_failed", request_id, run_id=run_id,
                      reason=f"attempt {attempt} stopped at step '{step}' ({type(exc).__name__}); the journal resumes there")
        if attempt >= rules.max_scrub_attempts:
            return _fail(ws, request_id, f"scrub stopped at step '{step}' in {attempt} attempts; last error {error}",
                         {}, run_id)
        return {"request_id": request_id, "state": ws.requests.get(request_id).state, "error": error, "step": step,
                "attempt": attempt}
    j.end()
    return _conclude_scrub(ws, request_id, plan, done, embedder, run_id)


def _conclude_scrub(ws: Workspace, request_id: str, plan: ForgetPlan, done: dict[str, Any], embedder,
                    run_id: str | None) -> dict[str, Any]:
    req = ws.requests.get(request_id)
    leaks = index_returns_forgotten(ws, plan, embedder)
    tainted = done["taint"]["tainted"]
    holds = done["collect"]["legal_holds"] + done["inbox"].get("legal_holds", []) + [{"blob": h["blob"], "detail": {k: v for k, v in h.items() if k != "blob"}}
                                              for h in (done.get("weights") or {}).get("object_lock", [])]
    weights = done.get("weights") or {}
    evidence = {
        "scrub": {"data": done["data"], "index": done["index"], "inbox": done["inbox"]["removed"],
                  "blobs": {k: done["collect"][k] for k in ("deleted", "still_named")},
                  "weights": {k: weights.get(k) for k in ("deleted", "held", "still_named", "serving") if k in weights}},
        "tainted_releases": tainted,
        "index_clean": not leaks,
        "index_leaks": leaks,
        "legal_holds": holds,
    }
    ws.log.append(ACTOR, "forget.scrubbed", request_id,
                  reason=f"{len(plan.row_ids)} rows, {len(plan.doc_ids)} documents removed; {len(tainted)} releases tainted"
                  + (f"; {len(holds)} object version(s) kept under legal hold (Object Lock)" if holds else ""),
                  run_id=run_id, details={"selector": ws.log.redact(json.dumps(_plain(req.selector), sort_keys=True))
                                          if req.selector is not None else req.selector_hash,
                                          "tables": plan.per_table, "index_clean": not leaks,
                                          "attempts": attempts_made(req.evidence)})
    if not plan.forget_qas:
        lifecycle.applied(ws, request_id, evidence, note="no fact reached the model's training data")
        if leaks:
            return {**_fail(ws, request_id, f"the serving index still holds {len(leaks)} covered document(s)", evidence,
                            run_id), **evidence}
        lifecycle.conclude(ws, request_id, "verified", {}, "retrieval-side only: every store scrubbed", run_id,
                           actor=ACTOR)
    else:
        lifecycle.planned(ws, request_id, evidence, note="scrubbed; model-side forgetting pending")
    return {"request_id": request_id, "state": ws.requests.get(request_id).state, **evidence, "plan": plan.summary()}


def pending_scrubs(ws: Workspace) -> list:
    """Requests whose data is not yet scrubbed from every store: received, or planned with an incomplete journal."""
    return [r for r in ws.requests.list(states=["received", "planned"])
            if r.state == "received" or not scrub_complete(r.evidence)]


def honour_pending_requests(ws: Workspace, policy: Policy, run_id: str | None = None, embedder=None) -> list[dict]:
    """Scrub every pending request now (a cycle calls this before admission), whether or not the sensor runs.

    Raises when a request cannot be scrubbed: no candidate may be built while a forgotten row could reach it."""
    from pipelines.forget.scrub import lease_live

    results = []
    for req in pending_scrubs(ws):
        if lease_live(req.evidence):
            raise PendingForget(f"forget request {req.request_id} is being scrubbed by another run; this cycle "
                                "builds no candidate until it completes (run again after it)")
        results.append(process_request(ws, req.request_id, embedder=embedder, run_id=run_id, policy=policy))
    if tainted_weights_left(ws, policy):  # a deletion after a promotion that failed is finished now
        release_after_move(ws, policy, "cycle start", run_id)
    stuck = pending_scrubs(ws)
    if stuck:
        detail = "; ".join(f"{r.request_id} ({(journal(r.evidence).get('attempts') or [{}])[-1].get('error', r.state)})"
                           for r in stuck)
        raise PendingForget(f"forget request(s) not fully scrubbed: {detail}. No candidate is built while their data "
                            "could reach it; the next attempt resumes each scrub where it stopped "
                            "(`memgov forget status ID`)")
    return results


class PendingForget(RuntimeError):
    """A cycle refused to start because a forget request's scrub is not complete."""


def retry_request(ws: Workspace, request_id: str, actor: str, reason: str,
                  proof: dict[str, str] | None = None) -> dict[str, Any]:
    """Put a failed request back in line: planning again when planning failed, resuming an incomplete scrub, or
    model-side forgetting (the next cycle, or now for urgent ones).

    Filing a new request would not do: its selector no longer matches anything (the data is already scrubbed),
    and the facts to forget are kept only in the failed request's plan.
    """
    actor, reason = actor.strip(), reason.strip()
    if not actor or not reason:
        raise ValueError("retry needs who retries (--by) and why (--reason)")
    req = ws.requests.get(request_id)
    if req.state != "failed":
        raise ValueError(f"request {request_id} is '{req.state}'; only a failed request can be retried")
    retries = [*(req.evidence or {}).get("retries", []), {"by": actor, "reason": reason}]
    j = journal(req.evidence)
    if not j.get("plan"):
        target, what = "received", "planning"
    elif not j.get("complete"):
        target, what = "planned", "the scrub"
        j["attempts"] = []  # a fresh budget of attempts; the failed ones stay in `retries` and the log
    elif (req.evidence or {}).get("plan", {}).get("forget_qas"):
        target, what = "planned", "model-side forgetting"
    else:
        raise ValueError(f"request {request_id} has no facts for the model to forget and its scrub is complete; its "
                         "failure was the serving index (see `memgov forget status`): run a cycle, then retry")
    old_attempts = journal(req.evidence).get("attempts") or []
    lifecycle.resumed(ws, request_id, target, {"retries": retries, "journal": j,
                                               "earlier_attempts": [*(req.evidence or {}).get("earlier_attempts", []),
                                                                    *(old_attempts if what == "the scrub" else [])]},
                      note=f"retried by {actor}: {reason}")
    ws.log.append(actor, "forget.retried", request_id, reason=f"{what}: {reason}",
                  details={"signed": proof} if proof else {})
    return {"request_id": request_id, "state": target, "resumes": what, "urgent": req.urgent}


def confirm_request(ws: Workspace, policy: Policy, request_id: str, by: str, role: str, reason: str,
                    run_id: str | None = None, proof: dict[str, str] | None = None) -> dict[str, Any]:
    """A named role confirms a plan that covers more than the policy's share; the request then runs as usual."""
    by, role, reason = by.strip(), role.strip(), reason.strip()
    if not by or not role or not reason:
        raise ValueError("confirmation needs who confirms (--by), their role (--role) and why (--reason)")
    rules = policy.unlearning
    req = ws.requests.get(request_id)
    if req.state != "held":
        raise ValueError(f"request {request_id} is '{req.state}'; only a held request needs a confirmation")
    if role not in rules.confirm_roles:
        raise ValueError(f"role '{role}' may not confirm broad forget requests; allowed roles: "
                         f"{', '.join(rules.confirm_roles)} (policy unlearning.confirm_roles)")
    if same_person(by) == same_person(req.requester):
        raise ValueError(f"{by} filed request {request_id} and cannot also confirm it; another person must")
    lifecycle.confirmed(ws, request_id, {"confirmation": {"by": by, "role": role, "reason": reason}},
                        note=f"broad plan confirmed by {by} ({role}): {reason}")
    ws.log.append(by if proof else f"user:{by}", "forget.confirmed", request_id, reason=reason, run_id=run_id,
                  details={"role": role, **({"signed": proof} if proof else {})})
    return {"request_id": request_id, "state": "received", "confirmed_by": by, "role": role}
