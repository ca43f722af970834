"""Constrained fine-tuning baseline for knowledge edits.

Only the chosen layer's MLP output projection is trained, on the edit prompts alone, and its
change is kept inside an L-infinity ball around the original weights. It is the usual point of
comparison for locate-and-edit methods: it makes the edits, but with no covariance to steer the
change away from other facts' keys it tends to disturb more of them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from pydantic import Field
from tqdm.auto import tqdm

from pipelines.core.plugins import EditResult, MethodConfig, require_config
from pipelines.methods.edit.edit_batch import base_stats, check_edits, edit_report, frozen_copy, target_scores
from pipelines.model.lm import encode_qa, exact_match, per_example_loss


class FinetuneEditConfig(MethodConfig):
    layer: int | None = Field(None, description="decoder layer whose MLP output projection is trained; null = the architecture's default (about a third deep)")
    learning_rate: float = Field(1e-2, gt=0.0, le=1.0)
    max_steps: int = Field(100, ge=1, le=10000, description="stop earlier once every edit is reproduced")
    linf_bound: float | None = Field(
        0.1, gt=0.0, description="max absolute change of any weight (null = unconstrained)"
    )


def _kept(model, tokenizer, facts: list[dict], share: bool = False):
    """Whether every protected fact still gets its answer (or, with share, the fraction that does)."""
    if not facts:
        return 1.0 if share else True
    hits = exact_match(model, tokenizer, [q["prompt"] for q in facts], [q["target"] for q in facts])
    return float(hits.mean()) if share else bool(hits.all())


def finetune_edits(
    model,
    tokenizer,
    edits: list[dict],
    cfg: FinetuneEditConfig,
    key_texts: list[str] | None = None,
    *,
    protect: Sequence[dict] | None = None,
    progress: bool = True,
) -> EditResult:
    """Fine-tune one projection on all edit prompts jointly; it keeps no key statistics, so key_texts is unused.
    Protected facts are trained to keep their answers beside the edits (their likelihood joins the loss)."""
    require_config(cfg, FinetuneEditConfig)
    edits = check_edits(edits)
    started = time.perf_counter()
    step = 0
    with frozen_copy(model, tokenizer, edits, cfg.layer) as (edited, target, prob_before):
        weight = target.module.weight
        weight.requires_grad_(True)
        original = weight.detach().clone()
        opt = torch.optim.Adam([weight], lr=cfg.learning_rate)
        batch = encode_qa(tokenizer, [e["prompt"] for e in edits], [e["target"] for e in edits], with_eos=False)
        edited_prompts = {e["prompt"] for e in edits}
        kept = [q for q in protect or [] if q["prompt"] not in edited_prompts]
        keep = encode_qa(tokenizer, [q["prompt"] for q in kept], [q["target"] for q in kept], with_eos=False) if kept else None
        for _ in tqdm(range(cfg.max_steps), desc="finetune edits", unit="step", disable=not progress):
            step += 1
            loss = per_example_loss(edited, batch).mean()
            if keep is not None:
                loss = loss + per_example_loss(edited, keep).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if cfg.linf_bound is not None:
                with torch.no_grad():
                    weight.copy_(original + (weight - original).clamp(-cfg.linf_bound, cfg.linf_bound))
            if all(target_scores(edited, tokenizer, edits)[0]) and _kept(edited, tokenizer, kept):
                break
    hits, prob_after = target_scores(edited, tokenizer, edits)
    stats = {**base_stats(started, edits, hits, target), "steps": step,
             "protected_kept": _kept(edited, tokenizer, kept, share=True)}
    return EditResult(model=edited, per_edit=edit_report(edits, prob_before, hits, prob_after), stats=stats)
