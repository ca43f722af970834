"""Model-side forgetting: the unlearning method run on a candidate for every request already scrubbed from the
stores, pulled down to the level of a model that never learned the data (a retrained reference where the base
checkpoint allows one, else never-seen facts of the same kind)."""

from __future__ import annotations

from typing import Any

from pipelines.core.rows import ContractRow, as_rows
from pipelines.deployment import evalsets
from pipelines.deployment.workspace import Workspace
from pipelines.forget import lifecycle
from pipelines.forget.reference import reference_forget_ll
from pipelines.model.knowledge import current_facts, known_by, qa, sample
from policies import Policy


def forget_set(request) -> list[dict[str, Any]]:
    """The cleartext facts a request asked to forget, kept in the request store (never in the log)."""
    return list((request.evidence or {}).get("plan", {}).get("forget_qas", []))


def pending_model_forgets(ws: Workspace) -> list:
    """Requests already scrubbed from data and index whose model-side forgetting has not been released yet."""
    return [r for r in ws.requests.list(states=["planned", "applied"]) if forget_set(r)]


def unseen_level(ws: Workspace, model, tokenizer) -> tuple[float, float]:
    """Mean token log-probability and exact-match recall the model gives facts of the same kind it never saw:
    the level to forget down to, and the recall it reaches by guessing."""
    from pipelines.model.lm import score_qa

    rows = evalsets.unseen(ws).items
    if not rows:
        raise ValueError(evalsets.FIX["unseen"] + " (forgetting is calibrated to the level of never-seen facts)")
    scores = score_qa(model, tokenizer, [q["prompt"] for q in rows], [q["target"] for q in rows])
    return float(scores.mean_logprob.mean()), float(scores.exact_match.mean())


def forgetting_target(ws: Workspace, policy: Policy, model, tokenizer, forget: list[dict[str, Any]]) -> dict[str, Any]:
    """The likelihood level to forget down to: where a model retrained without the data puts the forget set
    (relative to never-seen facts), when such a reference is affordable; else the never-seen level itself."""
    level, guessed = unseen_level(ws, model, tokenizer)
    # Guessing counts as forgotten only up to what the policy's verification accepts.
    recall_target = min(guessed, policy.unlearning.max_forget_recall)
    ref_rel, info = reference_forget_ll(ws, policy, forget)
    if not ref_rel:
        return {"floor_logprob": level, "unseen_recall": recall_target, "target": "never-seen facts of the same kind"}
    offset = sum(ref_rel) / len(ref_rel)
    return {"floor_logprob": min(0.0, level + offset), "unseen_recall": recall_target, "target": "retrained reference",
            "offset": offset}


RETAIN_SIZE = 400


def apply_forgetting(ws: Workspace, policy: Policy, model, tokenizer, requests: list, progress: bool = True,
                     keep: list[ContractRow] | None = None):
    """Run the policy's unlearning method for the given requests; returns the model and a record per request.

    The retain set is every fact of `keep` the model recalls (the facts this candidate was just taught: measured,
    a sample of all facts held only 0.68 of a cycle's new facts through forgetting) topped up with a sample of
    the other current facts."""
    if not requests:
        return model, []
    forget = [q for r in requests for q in forget_set(r)]
    forget_ids = {q["fact_id"] for q in forget}
    kept = [r for r in as_rows(keep or []) if r.is_question and r.fact_id not in forget_ids]
    kept_ids = {r.fact_id for r in kept}
    retain_pool = [r for fid, r in sorted(current_facts(ws.data.rows("admitted")).items())
                   if fid not in forget_ids and fid not in kept_ids]
    retain_rows = known_by(model, tokenizer, kept)
    retain_rows += known_by(model, tokenizer, sample(retain_pool, max(0, RETAIN_SIZE - len(retain_rows)),
                                                     seed=policy.seed))
    retain = [qa(r) for r in retain_rows]
    method, cfg = policy.unlearning.resolve("unlearn")
    calibration: dict[str, Any] = {}
    if policy.unlearning.calibrate_to_unseen and "floor_logprob" in type(cfg).model_fields:
        calibration = forgetting_target(ws, policy, model, tokenizer, forget)
        cfg = cfg.model_copy(update={k: calibration[k] for k in ("floor_logprob", "unseen_recall")})
    result = method.impl(model, tokenizer, forget, retain, cfg, progress=progress)
    result.stats["calibration"] = calibration
    records = []
    for req in requests:
        records.append({"request_id": req.request_id, "method": policy.unlearning.method, "stats": result.stats})
        if req.state == "planned":
            lifecycle.applied(ws, req.request_id, {"unlearning": result.stats}, note="model-side forgetting applied")
        ws.log.append("system:unlearn", "forget.model_applied", req.request_id, reason=policy.unlearning.method, details=result.stats)
    return result.model, records


__all__ = ["apply_forgetting", "forget_set", "forgetting_target", "pending_model_forgets", "unseen_level"]
