"""The gold-standard comparison for forgetting: a model retrained from scratch without the forget set.

Affordable only when the base model's training recipe is known and small (the tiny world model); for a
production checkpoint the evidence falls back to facts of the same kind the model never saw, and says so.
The reference is trained on every current fact except the tombstoned ones, with the base model's own
config, and cached by a hash of its config and training rows, so two requests over the same knowledge
pay for it once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any, NamedTuple

from evals.metrics import load_metric
from pipelines.cycle import evalsets
from pipelines.cycle.knowledge import current_facts, qa, world_for
from pipelines.lm import load_causal_lm, save_causal_lm, score_qa
from pipelines.workspace import Workspace
from policies import Policy


def reference_kind(policy: Policy, ws: Workspace | None = None) -> str:
    """'retrain' or 'unseen', resolving 'auto' by whether the base model can be rebuilt from its config (a checkpoint
    brought with `memgov init` cannot: memgov does not have its training recipe)."""
    choice = policy.unlearning.reference
    checkpoint = bool(policy.base_model.path) or (ws is not None and ws.deployment().get("kind") == "checkpoint")
    if choice == "auto":
        return "unseen" if checkpoint else "retrain"
    if choice == "retrain" and checkpoint:
        raise ValueError("unlearning.reference is 'retrain' but base_model.path names a checkpoint whose training "
                         "recipe memgov does not have; use reference: unseen (or auto)")
    return choice


def _kept_facts(ws: Workspace) -> list[dict[str, Any]]:
    tomb = ws.requests.tombstones()
    return [r for fid, r in sorted(current_facts(ws.data.rows("admitted")).items())
            if fid not in tomb.fact_ids and not tomb.covers(r)]


def _short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:16]


def _qa_pairs(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [[q["prompt"], q["target"]] for q in rows]


class _Plan(NamedTuple):
    """What today's reference is trained on and where it is cached, known before any training."""

    cfg: Any
    world: Any
    rows: list[dict[str, Any]]
    main: list[dict[str, Any]]
    folder: Path


def _reference_plan(ws: Workspace, policy: Policy) -> _Plan:
    from pipelines.world.basemodel import config_hash

    cfg = policy.base_model.tiny.model_copy(update={"seed": policy.world.seed, "n_subjects": policy.world.n_subjects})
    world = world_for(policy.world.seed, policy.world.n_subjects)
    facts = _kept_facts(ws)
    rows = [qa(r, world, template=k) for k in cfg.paraphrases_in_training for r in facts]
    main = [qa(r, world) for r in facts]
    key = _short_hash({"cfg": config_hash(cfg), "rows": _qa_pairs(rows)})
    return _Plan(cfg, world, rows, main, ws.models_cache / f"reference-{key}")


def retrained_reference(ws: Workspace, policy: Policy, progress: bool = False):
    """(model, tokenizer, report) of the tiny base model retrained on today's knowledge minus every tombstone."""
    return _load_or_train(_reference_plan(ws, policy), progress)


def _load_or_train(plan: _Plan, progress: bool):
    from pipelines.world.basemodel import build_model, train_on_facts
    from pipelines.world.tokenizer import build_tokenizer

    cfg, world, rows, main, folder = plan
    if (folder / "reference.json").is_file():
        model, tokenizer = load_causal_lm(folder)
        return model, tokenizer, json.loads((folder / "reference.json").read_text())
    tokenizer = build_tokenizer(world)
    model = build_model(cfg, tokenizer)
    report = train_on_facts(model, tokenizer, rows, world.general_text if cfg.general_text else [], cfg,
                            progress=progress, eval_qas=main)
    report = {**report, "facts": len(main), "key": folder.name.removeprefix("reference-")}
    tmp = folder.with_name(f"{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    save_causal_lm(model, tokenizer, tmp)
    (tmp / "reference.json").write_text(json.dumps(report, indent=1))
    if folder.exists():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.rename(folder)
    return model, tokenizer, report


def reference_forget_ll(ws: Workspace, policy: Policy, forget: list[dict[str, Any]],
                        progress: bool = False) -> tuple[list[float] | None, dict[str, Any]]:
    """Per-item log-likelihoods of the forget set under the retrained reference, relative to that model's mean on
    never-seen facts of the same kind (the scale `evals.suites.forgetting_evidence` compares on); or None and why."""
    if not forget:
        return None, {"reference": "none", "why": "no forget set"}
    kind = reference_kind(policy, ws)
    if kind != "retrain":
        return None, {"reference": "unseen", "why": "policy or base model: no retrained reference"}
    plan = _reference_plan(ws, policy)
    cached = plan.folder / f"forget-{_short_hash(_qa_pairs(forget))}.json"
    if cached.is_file():  # the unlearning step and the evaluation both ask for the same forget set
        out = json.loads(cached.read_text())
        return out["relative"], out["info"]
    model, tokenizer, report = _load_or_train(plan, progress)
    scores = score_qa(model, tokenizer, [q["prompt"] for q in forget], [q["target"] for q in forget])
    unseen = evalsets.unseen(ws).items
    if not unseen:
        return None, {"reference": "none", "why": evalsets.FIX["unseen"]}
    unseen_ll = score_qa(model, tokenizer, [q["prompt"] for q in unseen], [q["target"] for q in unseen]).mean_logprob
    level = float(unseen_ll.mean())
    forget_ll = [float(x) for x in scores.mean_logprob]
    mia = load_metric("membership_inference").compute(predictions=forget_ll + [float(x) for x in unseen_ll],
                                                      references=[1] * len(forget_ll) + [0] * len(unseen_ll))
    relative = [x - level for x in forget_ll]
    info = {"reference": "retrain", "training": report, "reference_forget_recall": float(scores.exact_match.mean()),
            "reference_unseen_level": level, "reference_mia_auc": mia["auc"],
            "scale": "log-likelihood minus the model's mean on never-seen facts"}
    tmp = cached.with_name(f"{cached.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps({"relative": relative, "info": info}))
    tmp.replace(cached)
    return relative, info


__all__ = ["reference_forget_ll", "reference_kind", "retrained_reference"]
