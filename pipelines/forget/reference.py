"""The gold-standard comparison for forgetting: a model retrained from scratch without the forget set.

Affordable only when the base checkpoint carries its own training recipe (pipelines/model/recipe.py: a small model
trained from its config on the deployment's facts, as the demo's is); for any other checkpoint the evidence
falls back to facts of the same kind the model never saw, and says so. The reference is trained on every
current fact except the tombstoned ones, from the base checkpoint's own config and tokenizer, and cached by a
hash of the recipe and the training rows, so two requests over the same knowledge pay for it once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any, NamedTuple

from evals.metrics import load_metric
from pipelines.core.filelock import exclusive
from pipelines.deployment import evalsets
from pipelines.deployment.artifacts import model_path
from pipelines.deployment.workspace import Workspace
from pipelines.model.knowledge import current_facts, qa
from pipelines.model.lm import load_causal_lm, save_causal_lm, score_qa
from pipelines.model.recipe import TrainingRecipe, fresh_from_config, read_recipe, recipe_qas, train_on_facts
from policies import Policy


def base_checkpoint(ws: Workspace) -> Path | None:
    """Local folder of the deployment's base checkpoint (r0001's model), or None before `init`."""
    digest = ws.deployment().get("model")
    return model_path(ws, digest) if digest else None


def base_recipe(ws: Workspace) -> tuple[TrainingRecipe, list[str], Path] | None:
    """(recipe, texts, folder) when the base checkpoint records how it was trained, else None."""
    folder = base_checkpoint(ws)
    found = read_recipe(folder) if folder is not None else None
    return (*found, folder) if found else None


def reference_kind(policy: Policy, ws: Workspace) -> str:
    """'retrain' or 'unseen', resolving 'auto' by whether the base checkpoint carries its training recipe."""
    choice = policy.unlearning.reference
    retrainable = base_recipe(ws) is not None
    if choice == "auto":
        return "retrain" if retrainable else "unseen"
    if choice == "retrain" and not retrainable:
        raise ValueError("unlearning.reference is 'retrain' but the base checkpoint carries no training recipe "
                         "(training_recipe.json, see pipelines/model/recipe.py), so it cannot be retrained without the "
                         "forget set; fix: set unlearning.reference to 'unseen' (or 'auto')")
    return choice


def _kept_facts(ws: Workspace) -> list[dict[str, Any]]:
    tomb = ws.requests.tombstones()
    return [r for fid, r in sorted(current_facts(ws.data.rows("admitted")).items())
            if not tomb.has_fact(fid) and not tomb.covers(r)]


def _short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:16]


def _qa_pairs(rows: list[dict[str, Any]]) -> list[list[str]]:
    return [[q["prompt"], q["target"]] for q in rows]


class _Plan(NamedTuple):
    """What today's reference is trained on and where it is cached, known before any training."""

    recipe: TrainingRecipe
    texts: list[str]
    base: Path
    rows: list[dict[str, Any]]
    main: list[dict[str, Any]]
    folder: Path


def _reference_plan(ws: Workspace) -> _Plan:
    found = base_recipe(ws)
    if found is None:
        raise ValueError("the base checkpoint carries no training recipe: no retrained reference")
    recipe, texts, base = found
    facts = _kept_facts(ws)
    rows = recipe_qas(facts, recipe)  # never a fact's held-out paraphrase, as the checkpoint was trained
    main = [qa(r) for r in facts]
    config = json.loads((base / "config.json").read_text())
    key = _short_hash({"recipe": recipe.model_dump(mode="json"), "config": config, "texts": _short_hash(texts),
                       "rows": _qa_pairs(rows)})
    return _Plan(recipe, texts, base, rows, main, ws.models_cache / f"reference-{key}")


def retrained_reference(ws: Workspace, progress: bool = False):
    """(model, tokenizer, report) of the base checkpoint retrained on today's knowledge minus every tombstone."""
    return _load_or_train(_reference_plan(ws), progress)


def _load_or_train(plan: _Plan, progress: bool):
    # Two processes over the same knowledge (the unlearning step and a parallel evaluation) train it once.
    with exclusive(plan.folder.with_name(f".{plan.folder.name}.lock")):
        if (plan.folder / "reference.json").is_file():
            model, tokenizer = load_causal_lm(plan.folder)
            return model, tokenizer, json.loads((plan.folder / "reference.json").read_text())
        return _train_reference(plan, progress)


def _train_reference(plan: _Plan, progress: bool):
    model, tokenizer = fresh_from_config(plan.base, plan.recipe.seed)
    report = train_on_facts(model, tokenizer, plan.rows, plan.texts, plan.recipe, progress=progress,
                            eval_qas=plan.main)
    report = {**report, "facts": len(plan.main), "key": plan.folder.name.removeprefix("reference-")}
    tmp = plan.folder.with_name(f"{plan.folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    save_causal_lm(model, tokenizer, tmp)
    (tmp / "reference.json").write_text(json.dumps(report, indent=1))
    if plan.folder.exists():  # a folder without reference.json is not a complete reference
        shutil.rmtree(plan.folder)
    tmp.rename(plan.folder)
    return model, tokenizer, report


def drop_stale_references(ws: Workspace) -> list[str]:
    """Delete every cached reference except the one for today's knowledge. A reference trained before a later
    request was filed was trained on that request's facts: it is a model that still knows them. Returns what went."""
    folders = sorted(p for p in ws.models_cache.glob("reference-*") if p.is_dir()) if ws.models_cache.is_dir() else []
    if not folders:
        return []
    keep = _reference_plan(ws).folder if base_recipe(ws) is not None else None
    gone = []
    for folder in folders:
        if folder != keep:
            shutil.rmtree(folder, ignore_errors=True)
            gone.append(folder.name)
    return gone


def reference_forget_ll(ws: Workspace, policy: Policy, forget: list[dict[str, Any]],
                        progress: bool = False) -> tuple[list[float] | None, dict[str, Any]]:
    """Per-item log-likelihoods of the forget set under the retrained reference, relative to that model's mean on
    never-seen facts of the same kind (the scale `evals.suites.forgetting_evidence` compares on); or None and why."""
    if not forget:
        return None, {"reference": "none", "why": "no forget set"}
    kind = reference_kind(policy, ws)
    if kind != "retrain":
        return None, {"reference": "unseen", "why": "policy or base model: no retrained reference"}
    plan = _reference_plan(ws)
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
