"""Negative preference optimisation: treat the forget answers as dispreferred, against a frozen reference.

loss = -(2/beta) * log sigmoid(-beta * (log p_theta(y|x) - log p_ref(y|x))), averaged over forget
examples, plus the retain NLL. Unlike gradient ascent the push fades once an answer is much less
likely than under the reference, which keeps the model from collapsing. The reference is the
model before unlearning; its log-probabilities are fixed, so they are computed once up front.
"""

from __future__ import annotations

import torch
from pydantic import Field

from pipelines.core.plugins import UnlearnResult, require_config
from pipelines.methods.unlearn.adapter_loop import AdapterUnlearnConfig, run_adapter_unlearning, sequence_logprob
from pipelines.model.lm import encode_qa


class NpoConfig(AdapterUnlearnConfig):
    beta: float = Field(0.5, gt=0.0, le=100.0, description="inverse temperature of the preference loss")


def npo(
    model, tokenizer, forget: list[dict], retain: list[dict], cfg: NpoConfig, *, progress: bool = True
) -> UnlearnResult:
    """NPO on a LoRA adapter with retain NLL; returns a merged copy."""
    require_config(cfg, NpoConfig)
    if not retain:
        raise ValueError("retain is empty: npo needs retain facts to protect")

    def make_loss(peft_model, prompts, targets):
        with torch.no_grad(), peft_model.disable_adapter():
            peft_model.eval()
            ref = torch.cat(
                [
                    sequence_logprob(
                        peft_model, encode_qa(tokenizer, prompts[i : i + 64], targets[i : i + 64], with_eos=False)
                    )
                    for i in range(0, len(prompts), 64)
                ]
            )

        def loss(m, batch, idx) -> torch.Tensor:
            ratio = sequence_logprob(m, batch) - ref[idx]
            return (-(2.0 / cfg.beta) * torch.nn.functional.logsigmoid(-cfg.beta * ratio)).mean()

        return loss

    return run_adapter_unlearning("npo", model, tokenizer, forget, retain, cfg, make_loss, True, progress)
