"""LoRA update: teach new facts through a low-rank adapter, with replay to protect old ones.

Training stops as soon as the new facts are recalled well enough (checked each epoch), because
every extra step only costs old-fact retention. While training, an optional probe of old facts is
scored every few steps so the forgetting curve is visible next to the learning curve.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, field_validator
from tqdm.auto import tqdm

from pipelines.lm import encode_qa, per_example_loss
from pipelines.plugins import MethodConfig
from pipelines.update.common import batches, check_qa, recall, seed_everything, working_copy, wrap_lora


class LoraUpdateConfig(MethodConfig):
    """Hyper-parameters of a LoRA update; defaults are measured on the tiny embedded model."""

    r: int = Field(8, ge=1, le=1024, description="adapter rank")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator (scale = alpha / r)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | None = Field(None, description="None = chosen by model type")
    trainable_token_indices: list[int] | None = Field(
        None, description="token rows to train as well (for tokens the base model never saw)"
    )
    learning_rate: float = Field(3e-3, gt=0.0, le=1.0)
    batch_size: int = Field(32, ge=1)
    max_epochs: int = Field(30, ge=1)
    target_recall: float = Field(0.95, gt=0.0, le=1.0, description="early stop on new-fact exact match")
    eval_every_steps: int = Field(10, ge=1)
    seed: int = 0

    @field_validator("target_modules")
    @classmethod
    def _non_empty_targets(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or any(not isinstance(v, str) or not v.strip() for v in value)):
            raise ValueError("target_modules must be null (auto) or a non-empty list of layer names such as c_attn")
        return value

    @field_validator("trainable_token_indices")
    @classmethod
    def _non_negative_tokens(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(v < 0 for v in value):
            raise ValueError("trainable_token_indices must be non-negative token ids")
        return value


@dataclass
class UpdateResult:
    model: Any  # merged plain transformers model
    adapter_dir: Path
    history: list[dict[str, float | None]] = field(default_factory=list)
    stats: dict[str, float | int | bool] = field(default_factory=dict)


def train_lora(
    model,
    tokenizer,
    samples: list[dict],
    replay: list[dict],
    cfg: LoraUpdateConfig,
    probe: list[dict] | None = None,
    progress: bool = True,
) -> UpdateResult:
    """Fit a LoRA adapter on samples + replay; returns the merged model and the saved adapter."""
    if not isinstance(cfg, LoraUpdateConfig):
        raise ValueError(f"cfg must be a LoraUpdateConfig, got {type(cfg).__name__}")
    new_p, new_t = check_qa(samples, "samples")
    rep_p, rep_t = check_qa(replay or [], "replay", allow_empty=True)
    probe_p, probe_t = check_qa(probe or [], "probe", allow_empty=True)
    started = time.perf_counter()
    rng = seed_everything(cfg.seed)

    base = working_copy(model)
    new_before = recall(base, tokenizer, new_p, new_t)
    probe_before = recall(base, tokenizer, probe_p, probe_t) if probe_p else None
    peft_model = wrap_lora(base, cfg.r, cfg.alpha, cfg.dropout, cfg.target_modules, cfg.trainable_token_indices)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=cfg.learning_rate)

    prompts, targets = new_p + rep_p, new_t + rep_t
    history: list[dict[str, float | None]] = []
    step, epoch, loss_value, new_acc = 0, 0, float("nan"), new_before
    bar = tqdm(total=cfg.max_epochs, desc="lora update", unit="epoch", disable=not progress)
    for _ in range(cfg.max_epochs):
        epoch += 1
        peft_model.train()
        for idx in batches(len(prompts), cfg.batch_size, rng):
            batch = encode_qa(tokenizer, [prompts[i] for i in idx], [targets[i] for i in idx])
            loss = per_example_loss(peft_model, batch).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_value = float(loss.detach())
            if step % cfg.eval_every_steps == 0:
                history.append(_snapshot(peft_model, tokenizer, step, loss_value, new_p, new_t, probe_p, probe_t))
        new_acc = recall(peft_model, tokenizer, new_p, new_t)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", new=f"{new_acc:.2f}")
        if new_acc >= cfg.target_recall:
            break
    bar.close()
    if not history or history[-1]["step"] != step:
        history.append(_snapshot(peft_model, tokenizer, step, loss_value, new_p, new_t, probe_p, probe_t))

    adapter_dir = Path(tempfile.mkdtemp(prefix="memgov-lora-"))
    peft_model.save_pretrained(adapter_dir)
    merged = peft_model.merge_and_unload()
    merged.eval()
    probe_after = recall(merged, tokenizer, probe_p, probe_t) if probe_p else None
    stats: dict[str, float | int | bool] = {
        "seconds": round(time.perf_counter() - started, 3),
        "steps": step,
        "epochs": epoch,
        "final_loss": loss_value,
        "new_recall_before": new_before,
        "new_recall_after": new_acc,
        "reached_target": bool(new_acc >= cfg.target_recall),
        "n_samples": len(new_p),
        "n_replay": len(rep_p),
        "trainable_params": int(trainable),
    }
    if probe_before is not None:
        stats["probe_recall_before"] = probe_before
        stats["probe_recall_after"] = probe_after
    return UpdateResult(model=merged, adapter_dir=adapter_dir, history=history, stats=stats)


def _snapshot(model, tokenizer, step, loss, new_p, new_t, probe_p, probe_t) -> dict[str, float | None]:
    """One point of the continual-evaluation curve: learning (new) against forgetting (probe)."""
    return {
        "step": step,
        "loss": loss,
        "new_acc": recall(model, tokenizer, new_p, new_t),
        "probe_acc": recall(model, tokenizer, probe_p, probe_t) if probe_p else None,
    }
