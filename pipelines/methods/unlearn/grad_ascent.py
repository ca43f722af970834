"""Plain gradient ascent on the forget set: the simplest unlearning baseline.

No cap and no retain term, so it reaches the forget target fast but typically collapses the rest
of the model; it is kept to show what the other methods protect against.
"""

from __future__ import annotations

import torch
from pydantic import Field

from pipelines.core.plugins import UnlearnResult, require_config
from pipelines.methods.unlearn.adapter_loop import AdapterUnlearnConfig, run_adapter_unlearning
from pipelines.model.lm import per_example_loss


class GradAscentConfig(AdapterUnlearnConfig):
    retain_steps: int = Field(0, ge=0, description="retain-only repair steps after the target (0 = pure ascent)")


def grad_ascent(
    model, tokenizer, forget: list[dict], retain: list[dict], cfg: GradAscentConfig, *, progress: bool = True
) -> UnlearnResult:
    """Maximise the forget NLL until the forget target is met; retain is only measured."""
    require_config(cfg, GradAscentConfig)

    def make_loss(_model, _prompts, _targets):
        def loss(m, batch, _idx) -> torch.Tensor:
            return -per_example_loss(m, batch).mean()

        return loss

    return run_adapter_unlearning("grad_ascent", model, tokenizer, forget, retain, cfg, make_loss, False, progress)
