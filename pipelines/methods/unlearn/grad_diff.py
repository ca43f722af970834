"""Gradient difference: push the forget facts' likelihood down while fitting retain facts.

The forget term is the negative NLL, capped per example: once a fact's NLL passes the cap it
stops contributing, so one fact cannot run away to infinity while the rest stay remembered, and
the model is not driven into answering everything with junk.
"""

from __future__ import annotations

import torch
from pydantic import Field

from pipelines.core.plugins import UnlearnResult, require_config
from pipelines.methods.unlearn.adapter_loop import AdapterUnlearnConfig, run_adapter_unlearning
from pipelines.model.lm import per_example_loss


class GradDiffConfig(AdapterUnlearnConfig):
    forget_loss_cap: float = Field(6.0, gt=0.0, description="per-example NLL (nats) beyond which a fact stops pushing")


def grad_diff(
    model, tokenizer, forget: list[dict], retain: list[dict], cfg: GradDiffConfig, *, progress: bool = True
) -> UnlearnResult:
    """Forget with capped gradient ascent + retain NLL on a LoRA adapter; returns a merged copy."""
    require_config(cfg, GradDiffConfig)
    if not retain:
        raise ValueError("retain is empty: grad_diff needs retain facts to protect (or use grad_ascent)")

    def make_loss(_model, _prompts, _targets):
        def loss(m, batch, _idx) -> torch.Tensor:
            return -per_example_loss(m, batch).clamp(max=cfg.forget_loss_cap).mean()

        return loss

    return run_adapter_unlearning("grad_diff", model, tokenizer, forget, retain, cfg, make_loss, True, progress)
