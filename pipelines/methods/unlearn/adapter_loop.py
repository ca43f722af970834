"""The shared loop of adapter-based unlearning methods and their common settings.

Each step either pushes the forget set away (method-specific forget loss, plus retain NLL when the
method uses it) or, once the forget set is forgotten, repairs the retain set with a retain-only step.
Forgotten means exact-match recall at or below the target, or at or below the recall the model gets on
never-seen facts of the same kind (`unseen_recall`, set by the caller): a fact whose answer is the
model's default guess for its relation stays "recalled" by a model that never saw it (the retrained
reference recalls 2 of 30 that way at 10,000 facts), and pushing until it is not drove the forget set
13 nats/token below never-seen facts (membership AUC 0.09). The stop condition is checked after every
step, because a forget loss that keeps running after the target is met mostly damages what should be kept.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import torch
from pydantic import Field, field_validator
from tqdm.auto import tqdm

from pipelines.core.plugins import MethodConfig, UnlearnResult
from pipelines.methods.update.lora_tools import check_qa, recall, seed_everything, working_copy, wrap_lora
from pipelines.model.lm import EncodedQA, encode_qa, per_example_loss


class AdapterUnlearnConfig(MethodConfig):
    """Settings every LoRA-based unlearning method shares."""

    r: int = Field(8, ge=1, le=1024)
    alpha: int = Field(16, ge=1)
    target_modules: list[str] | None = Field(None, description="None = chosen by model type")
    learning_rate: float = Field(2e-3, gt=0.0, le=1.0)
    forget_batch_size: int = Field(32, ge=1)
    retain_batch_size: int = Field(32, ge=1)
    max_steps: int = Field(300, ge=1, description="hard cap on optimisation steps")
    forget_target: float = Field(0.0, ge=0.0, lt=1.0, description="stop once forget exact-match recall <= this")
    retain_steps: int = Field(20, ge=0, description="retain-only steps after the forget target is met")
    retain_weight: float = Field(1.0, ge=0.0, description="weight of the retain NLL in forget steps")
    eval_every_steps: int = Field(10, ge=1, description="how often retain recall is recorded in the history")
    monitor_size: int = Field(200, ge=1, description="retain facts scored for the history curve")
    floor_logprob: float | None = Field(
        None, le=0.0, description="mean token log-prob of never-seen facts of the same kind; retain steps lift "
        "forget facts pushed below it back up to it (set by the caller, not the policy)")
    unseen_recall: float | None = Field(
        None, ge=0.0, le=1.0, description="exact-match recall of never-seen facts of the same kind; forget recall "
        "at or below it counts as forgotten (set by the caller, not the policy)")
    calibration_steps: int = Field(60, ge=0, description="retain-phase length while pulling toward floor_logprob")
    seed: int = 0

    @field_validator("target_modules")
    @classmethod
    def _non_empty_targets(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("target_modules must be null (auto) or a non-empty list of layer names")
        return value


def sequence_logprob(model, batch: EncodedQA) -> torch.Tensor:
    """Summed log-probability of each example's labelled tokens (differentiable)."""
    n = (batch.labels[:, 1:] != -100).sum(1).to(next(model.parameters()).device)
    return -per_example_loss(model, batch) * n


# Without the pull the demo's forget set ended 0.4-3 nats/token from the never-seen level (membership AUC
# 0.16-0.29: over-forgotten); see _off_floor for the form and weight.
FLOOR_WEIGHT = 0.1

ForgetLoss = Callable[[Any, EncodedQA, list[int]], torch.Tensor]


def run_adapter_unlearning(
    name: str,
    model,
    tokenizer,
    forget: list[dict],
    retain: list[dict],
    cfg: AdapterUnlearnConfig,
    make_forget_loss: Callable[[Any, list[str], list[str]], ForgetLoss],
    use_retain: bool,
    progress: bool,
) -> UnlearnResult:
    """The loop described in the module docstring; make_forget_loss builds the method's loss."""
    f_p, f_t = check_qa(forget, "forget")
    r_p, r_t = check_qa(retain or [], "retain", allow_empty=not use_retain)
    started = time.perf_counter()
    rng = seed_everything(cfg.seed)
    base = working_copy(model).eval()
    forget_before = recall(base, tokenizer, f_p, f_t)
    retain_before = recall(base, tokenizer, r_p, r_t) if r_p else None
    monitor = rng.sample(range(len(r_p)), min(cfg.monitor_size, len(r_p)))
    m_p, m_t = [r_p[i] for i in monitor], [r_t[i] for i in monitor]

    peft_model = wrap_lora(base, cfg.r, cfg.alpha, 0.0, cfg.target_modules)
    forget_loss = make_forget_loss(peft_model, f_p, f_t)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=cfg.learning_rate)

    history: list[dict[str, Any]] = []
    forget_acc, step, forget_steps, retain_only = forget_before, 0, 0, 0
    forgotten_at = max(cfg.forget_target, cfg.unseen_recall or 0.0)
    bar = tqdm(total=cfg.max_steps, desc=f"unlearn ({name})", unit="step", disable=not progress)
    while step < cfg.max_steps:
        done = forget_acc <= forgotten_at
        repair_steps = max(cfg.retain_steps, cfg.calibration_steps) if cfg.floor_logprob is not None else cfg.retain_steps
        if done and (retain_only >= repair_steps or not r_p):
            break
        peft_model.train()
        parts: dict[str, float] = {}
        if not done:
            idx = rng.sample(range(len(f_p)), min(cfg.forget_batch_size, len(f_p)))
            batch = encode_qa(tokenizer, [f_p[i] for i in idx], [f_t[i] for i in idx], with_eos=False)
            loss = forget_loss(peft_model, batch, idx)
            parts["forget_loss"] = float(loss.detach())
            if use_retain and r_p and cfg.retain_weight > 0:
                r_loss = _retain_loss(peft_model, tokenizer, r_p, r_t, cfg.retain_batch_size, rng)
                parts["retain_loss"] = float(r_loss.detach())
                loss = loss + cfg.retain_weight * r_loss
            forget_steps += 1
        else:
            loss = _retain_loss(peft_model, tokenizer, r_p, r_t, cfg.retain_batch_size, rng)
            parts["retain_loss"] = float(loss.detach())
            if cfg.floor_logprob is not None:
                off = _off_floor(peft_model, tokenizer, f_p, f_t, cfg.floor_logprob)
                parts["off_floor"] = float(off.detach())
                loss = loss + FLOOR_WEIGHT * off
            retain_only += 1
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        forget_acc = recall(peft_model, tokenizer, f_p, f_t)
        point: dict[str, Any] = {"step": step, "phase": "retain" if done else "forget", "forget_acc": forget_acc}
        point.update(parts)
        if m_p and (step % cfg.eval_every_steps == 0):
            point["retain_acc"] = recall(peft_model, tokenizer, m_p, m_t)
        history.append(point)
        bar.update(1)
        bar.set_postfix(forget=f"{forget_acc:.2f}", phase=point["phase"])
    bar.close()

    merged = peft_model.merge_and_unload().eval()
    stats = {
        "method": name,
        "seconds": round(time.perf_counter() - started, 3),
        "steps": step,
        "forget_steps": forget_steps,
        "retain_only_steps": retain_only,
        "reached_target": bool(forget_acc <= forgotten_at),
        "forgotten_at_recall": forgotten_at,
        "forget_recall_before": forget_before,
        "forget_recall_after": recall(merged, tokenizer, f_p, f_t),
        "retain_recall_before": retain_before,
        "retain_recall_after": recall(merged, tokenizer, r_p, r_t) if r_p else None,
        "n_forget": len(f_p),
        "n_retain": len(r_p),
    }
    return UnlearnResult(model=merged, history=history, stats=stats)


def _off_floor(model, tokenizer, prompts, targets, floor: float) -> torch.Tensor:
    """Distance of the forget set's mean token log-prob from the target level (absolute, so the pull is gentle).

    Over-forgetting is itself a membership tell (the forget set becomes *less* likely than a model that never
    saw it would make it), and under-forgetting leaves it recognisable, so the retain phase pulls the forget
    set's mean toward the target from either side. Measured against a squared pull on a forget set 7 nats
    from its target: squared (weight 0.1) reached it but cost 24 points of retain recall; absolute (weight
    0.1, 60 steps) reached it within 0.1 nats and kept 97% of retain recall.
    """
    batch = encode_qa(tokenizer, prompts, targets, with_eos=False)
    return (per_example_loss(model, batch).mean() + floor).abs()


def _retain_loss(model, tokenizer, prompts, targets, size: int, rng: random.Random) -> torch.Tensor:
    """Mean NLL on a fresh random batch of retain facts (eos included, as in training)."""
    idx = rng.sample(range(len(prompts)), min(size, len(prompts)))
    batch = encode_qa(tokenizer, [prompts[i] for i in idx], [targets[i] for i in idx])
    return per_example_loss(model, batch).mean()
