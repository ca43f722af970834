"""Selective synaptic dampening: retrain-free unlearning from two diagonal Fisher estimates.

Parameters that matter far more to the forget set than to the retained data (forget importance
> alpha x retain importance) are scaled down by min(dampening x retain / forget, 1); everything else
is left exactly as it was. No gradient step is taken, so it is fast and cannot drift elsewhere.

Importances are measured once, on the original model: recomputing them after a pass is misleading
(the forget facts' loss has risen, so their gradients dwarf those of the still well-fitted retain
facts and nearly every weight gets selected). When a pass leaves the forget set above target, the
selection threshold alpha is lowered and the dampening is redone from the original weights.
"""

from __future__ import annotations

import random
import time
from typing import Any

import torch
from pydantic import Field

from pipelines.core.plugins import MethodConfig, UnlearnResult, require_config
from pipelines.methods.update.lora_tools import check_qa, recall, working_copy
from pipelines.model.lm import encode_qa, per_example_loss


class SsdConfig(MethodConfig):
    alpha: float = Field(10.0, gt=1.0, description="selection: forget importance must exceed alpha x retain importance")
    dampening: float = Field(1.0, gt=0.0, description="lambda: selected weights are scaled by lambda x retain/forget")
    max_rounds: int = Field(10, ge=1, le=50, description="dampening passes while forget recall is above target")
    alpha_decay: float = Field(0.6, gt=0.0, le=1.0, description="alpha multiplier between passes")
    forget_target: float = Field(0.0, ge=0.0, lt=1.0)
    batch_size: int = Field(1, ge=1, description="examples per gradient in the Fisher estimate (1 = per example)")
    max_retain_examples: int = Field(256, ge=1, description="retain facts sampled for the retain importance")
    seed: int = 0


def _importance(model, tokenizer, prompts: list[str], targets: list[str], batch_size: int) -> dict[str, torch.Tensor]:
    """Diagonal Fisher: mean squared gradient of the NLL, per parameter."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    n_batches = 0
    for start in range(0, len(prompts), batch_size):
        batch = encode_qa(tokenizer, prompts[start : start + batch_size], targets[start : start + batch_size])
        model.zero_grad(set_to_none=True)
        per_example_loss(model, batch).mean().backward()
        for n, p in params.items():
            if p.grad is not None:
                total[n] += p.grad.detach() ** 2
        n_batches += 1
    model.zero_grad(set_to_none=True)
    return {n: t / max(n_batches, 1) for n, t in total.items()}


def ssd(
    model, tokenizer, forget: list[dict], retain: list[dict], cfg: SsdConfig, *, progress: bool = True
) -> UnlearnResult:
    """Dampen forget-specific parameters of a copy of the model; no training loop."""
    require_config(cfg, SsdConfig)
    f_p, f_t = check_qa(forget, "forget")
    r_p, r_t = check_qa(retain, "retain")
    from tqdm.auto import tqdm

    started = time.perf_counter()
    rng = random.Random(cfg.seed)
    work = working_copy(model).eval()
    for p in work.parameters():
        p.requires_grad_(True)
    forget_before, retain_before = recall(work, tokenizer, f_p, f_t), recall(work, tokenizer, r_p, r_t)
    sample = rng.sample(range(len(r_p)), min(cfg.max_retain_examples, len(r_p)))
    s_p, s_t = [r_p[i] for i in sample], [r_t[i] for i in sample]

    imp_f = _importance(work, tokenizer, f_p, f_t, cfg.batch_size)
    imp_r = _importance(work, tokenizer, s_p, s_t, cfg.batch_size)
    original = {n: p.detach().clone() for n, p in work.named_parameters()}
    history: list[dict[str, Any]] = []
    alpha, forget_acc, rounds = cfg.alpha, forget_before, 0
    for _ in tqdm(range(cfg.max_rounds), desc="unlearn (ssd)", unit="pass", disable=not progress):
        if forget_acc <= cfg.forget_target:
            break
        rounds += 1
        selected = 0
        with torch.no_grad():
            for name, p in work.named_parameters():
                f, r = imp_f[name], imp_r[name]
                mask = f > alpha * r
                scale = (cfg.dampening * r / f.clamp(min=1e-20)).clamp(max=1.0)
                p.copy_(original[name] * torch.where(mask, scale, torch.ones_like(scale)))
                selected += int(mask.sum())
        forget_acc = recall(work, tokenizer, f_p, f_t)
        history.append(
            {
                "round": rounds,
                "alpha": alpha,
                "dampened_params": selected,
                "forget_acc": forget_acc,
                "retain_acc": recall(work, tokenizer, s_p, s_t),
            }
        )
        alpha *= cfg.alpha_decay
    work.zero_grad(set_to_none=True)
    stats = {
        "method": "ssd",
        "seconds": round(time.perf_counter() - started, 3),
        "steps": rounds,
        "reached_target": bool(forget_acc <= cfg.forget_target),
        "forget_recall_before": forget_before,
        "forget_recall_after": forget_acc,
        "retain_recall_before": retain_before,
        "retain_recall_after": recall(work, tokenizer, r_p, r_t),
        "n_forget": len(f_p),
        "n_retain": len(r_p),
    }
    return UnlearnResult(model=work, history=history, stats=stats)
