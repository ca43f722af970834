"""LoRA update: teach new facts and instructions through a low-rank adapter, with replay to protect old facts.

Samples are (prompt, target) pairs with loss on the target only; a sample of kind "instruction" is a rendered
prompt and its response. Optional plain texts (documents) are mixed into every epoch with loss on every token.
Training stops as soon as the new samples are learnt well enough (checked each epoch), because every extra step
only costs old-fact retention: when the samples include facts, as soon as they are recalled exactly (target_recall);
instructions ride along and never prolong training (measured: one slow-to-learn response kept a cycle training
to max_epochs, and the batch's already-known facts and paraphrases were lost). Without facts, as soon as the
instruction responses have target_response_accuracy of their tokens predicted (exact match of a whole long response
is a needlessly hard bar, and the policy's instruction metric scores free text anyway). Documents have no target to
reach: alone they train for text_epochs. While training, an optional probe of old facts is scored every few
steps so the forgetting curve is visible next to the learning curve.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator
from tqdm.auto import tqdm

from pipelines.core.plugins import MethodConfig, UpdateResult, require_config
from pipelines.methods.update.lora_tools import (
    batches,
    check_qa,
    check_texts,
    recall,
    recall_by_task,
    seed_everything,
    working_copy,
    wrap_lora,
)
from pipelines.model.lm import EncodedQA, encode_qa, encode_token_rows, per_example_loss, score_qa, text_windows

INSTRUCTION = "instruction"


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
    batch_size: int = Field(32, ge=1, le=65536)
    max_epochs: int = Field(30, ge=1, le=10000, description="a batch's sidecar may lower or raise it within bounds")
    target_recall: float = Field(0.95, gt=0.0, le=1.0, description="early stop on new-fact exact match")
    target_response_accuracy: float = Field(
        0.95, gt=0.0, le=1.0, description="early stop of an update without facts: share of response tokens predicted"
    )
    text_epochs: int = Field(3, ge=1, description="epochs when only documents train (they give no stop signal)")
    max_text_tokens: int = Field(256, ge=8, description="documents are cut into windows of at most this many tokens")
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


class HftConfig(LoraUpdateConfig):
    """Half fine-tuning (HFT, Hui et al. 2024) on LoRA: a share of the adapted modules stays frozen in each update,
    so their weights come out bit-identical to the champion's and what they hold cannot be overwritten."""

    frozen_share: float = Field(0.5, gt=0.0, lt=1.0, description="share of the adapted modules left frozen")
    choose: Literal["random", "alternate"] = Field(
        "random", description="random (seeded by seed) or every other adapted module in model order")


def _freeze_share(peft_model, cfg: HftConfig) -> list[str]:
    """Freeze the LoRA factors of `frozen_share` of the adapted modules; lora_B stays zero, so the merge leaves
    those modules' weights exactly as they were. Returns the frozen modules' names."""
    import random

    adapted = sorted({name.rsplit(".lora_A", 1)[0] for name, _ in peft_model.named_parameters() if ".lora_A" in name})
    n = max(1, min(len(adapted) - 1, round(cfg.frozen_share * len(adapted))))
    if cfg.choose == "alternate":
        chosen = set(adapted[::2][:n])
    else:
        chosen = set(random.Random(cfg.seed).sample(adapted, n))
    for name, param in peft_model.named_parameters():
        if any(name.startswith(module + ".lora_") for module in chosen):
            param.requires_grad_(False)
    return sorted(chosen)


class KfpfConfig(LoraUpdateConfig):
    """k-FPF (Zhu et al.): after the update, the adapted modules that drifted most from the champion are the
    forgetting-prone ones; only those are fine-tuned on the buffer (replay plus this update's samples, so the new
    facts are kept while old ones are won back), for `k` steps."""

    fpf_share: float = Field(0.25, gt=0.0, le=1.0, description="share of the adapted modules that are repaired")
    k: int = Field(20, ge=1, description="repair steps on the replay buffer")
    repair_learning_rate: float = Field(1e-3, gt=0.0, le=1.0)


def module_drift(peft_model) -> dict[str, float]:
    """Each adapted module's change relative to its weight: ||scale * B A|| / ||W||."""
    out: dict[str, float] = {}
    for name, module in peft_model.named_modules():
        if not hasattr(module, "lora_A") or not getattr(module, "active_adapters", None):
            continue
        adapter = module.active_adapters[0]
        if adapter not in module.lora_A:
            continue
        with torch.no_grad():
            delta = module.lora_B[adapter].weight @ module.lora_A[adapter].weight * module.scaling[adapter]
            out[name] = float(delta.norm() / module.base_layer.weight.norm().clamp_min(1e-12))
    return out


def repair_forgetting_prone(peft_model, tokenizer, prompts: list[str], targets: list[str], cfg: KfpfConfig,
                            rng) -> list[str]:
    """Fine-tune only the most-drifted modules' LoRA factors on the replay buffer; returns their names."""
    drift = module_drift(peft_model)
    n = max(1, round(cfg.fpf_share * len(drift)))
    chosen = sorted(sorted(drift, key=drift.get, reverse=True)[:n])
    params = [p for name, p in peft_model.named_parameters()
              if ".lora_" in name and any(name.startswith(m + ".lora_") for m in chosen)]
    saved = {id(p): p.requires_grad for p in peft_model.parameters()}
    for p in peft_model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=cfg.repair_learning_rate)
    peft_model.train()
    done = 0
    while done < cfg.k:
        for idx in batches(len(prompts), cfg.batch_size, rng):
            loss = per_example_loss(peft_model, encode_qa(tokenizer, [prompts[i] for i in idx],
                                                          [targets[i] for i in idx])).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
            if done >= cfg.k:
                break
    for p in peft_model.parameters():
        p.requires_grad_(saved[id(p)])
    return chosen


def train_lora(
    model,
    tokenizer,
    samples: list[dict],
    replay: list[dict],
    cfg: LoraUpdateConfig,
    *,
    probe: list[dict] | None = None,
    texts: Sequence[str] | None = None,
    progress: bool = True,
) -> UpdateResult:
    """Fit a LoRA adapter on samples + replay (+ texts); returns the merged model and the saved adapter."""
    require_config(cfg, LoraUpdateConfig)
    texts = check_texts(texts or [], "texts")
    new_p, new_t = check_qa(samples, "samples", allow_empty=bool(texts))
    rep_p, rep_t = check_qa(replay or [], "replay", allow_empty=True)
    probe_p, probe_t = check_qa(probe or [], "probe", allow_empty=True)
    probe_set = _Probe(probe_p, probe_t, [q.get("task") for q in probe or []])
    goal = _Goal.of(samples, cfg)
    started = time.perf_counter()
    rng = seed_everything(cfg.seed)

    base = working_copy(model)
    windows = text_windows(tokenizer, texts, min(cfg.max_text_tokens, tokenizer.model_max_length))
    before = goal.measure(base, tokenizer)
    text_before = _text_loss(base, tokenizer, windows)
    probe_before, tasks_before = probe_set.measure(base, tokenizer)
    peft_model = wrap_lora(base, cfg.r, cfg.alpha, cfg.dropout, cfg.target_modules, cfg.trainable_token_indices)
    frozen = _freeze_share(peft_model, cfg) if isinstance(cfg, HftConfig) else []
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=cfg.learning_rate)

    prompts, targets = new_p + rep_p, new_t + rep_t
    history: list[dict[str, float | None]] = []
    step, epoch, loss_value, now = 0, 0, float("nan"), before
    bar = tqdm(total=cfg.max_epochs, desc="lora update", unit="epoch", disable=not progress)
    for _ in range(cfg.max_epochs if goal.any else min(cfg.text_epochs, cfg.max_epochs)):
        epoch += 1
        peft_model.train()
        for batch in _epoch_batches(tokenizer, prompts, targets, windows, cfg.batch_size, rng):
            loss = per_example_loss(peft_model, batch).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_value = float(loss.detach())
            if step % cfg.eval_every_steps == 0:
                history.append(_snapshot(peft_model, tokenizer, step, loss_value, goal, probe_set))
        now = goal.measure(peft_model, tokenizer)
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", new=f"{now['new_recall'] or 0.0:.2f}")
        if goal.reached(now):
            break
    bar.close()
    repaired = (repair_forgetting_prone(peft_model, tokenizer, new_p + rep_p, new_t + rep_t, cfg, rng)
                if isinstance(cfg, KfpfConfig) and rep_p else [])
    if not history or history[-1]["step"] != step:
        history.append(_snapshot(peft_model, tokenizer, step, loss_value, goal, probe_set))

    adapter_dir = Path(tempfile.mkdtemp(prefix="memgov-lora-"))
    peft_model.save_pretrained(adapter_dir)
    merged = peft_model.merge_and_unload()
    merged.eval()
    probe_after, _ = probe_set.measure(merged, tokenizer)
    stats: dict[str, float | int | bool] = {
        "seconds": round(time.perf_counter() - started, 3),
        "steps": step,
        "epochs": epoch,
        "final_loss": loss_value,
        "new_recall_before": before["new_recall"],
        "new_recall_after": now["new_recall"],
        "reached_target": bool(goal.reached(now)),
        "n_samples": len(new_p),
        **({"frozen_modules": len(frozen)} if frozen else {}),
        **({"forgetting_prone_modules": len(repaired)} if repaired else {}),
        "n_replay": len(rep_p),
        "trainable_params": int(trainable),
    }
    if goal.instructions:
        stats |= {"n_instructions": len(goal.instructions), "response_accuracy_before": before["response_accuracy"],
                  "response_accuracy_after": now["response_accuracy"]}
    if texts:
        stats |= {"n_texts": len(texts), "n_text_windows": len(windows), "text_loss_before": text_before,
                  "text_loss_after": _text_loss(merged, tokenizer, windows)}
    if probe_before is not None:
        stats["probe_recall_before"] = probe_before
        stats["probe_recall_after"] = probe_after
    if tasks_before:
        stats["probe_tasks_before"] = tasks_before
    return UpdateResult(model=merged, adapter_dir=adapter_dir, history=history, stats=stats)


@dataclass
class _Goal:
    """What "learnt" means for this update: the facts recalled exactly; without facts, the instruction responses
    mostly predicted."""

    facts: list[dict]
    instructions: list[dict]
    target_recall: float
    target_response_accuracy: float

    @classmethod
    def of(cls, samples: list[dict], cfg: LoraUpdateConfig) -> _Goal:
        instructions = [s for s in samples if s.get("kind") == INSTRUCTION]
        facts = [s for s in samples if s.get("kind") != INSTRUCTION]
        return cls(facts, instructions, cfg.target_recall, cfg.target_response_accuracy)

    @property
    def any(self) -> bool:
        return bool(self.facts or self.instructions)

    def measure(self, model, tokenizer) -> dict[str, float | None]:
        """new_recall: exact match of the facts (of the instructions when there are no facts, as before their
        time every sample was a fact); response_accuracy: token accuracy of the instruction responses."""
        out: dict[str, float | None] = {"new_recall": None, "fact_recall": None, "response_accuracy": None}
        if self.facts:
            out["fact_recall"] = recall(model, tokenizer, [s["prompt"] for s in self.facts],
                                        [s["target"] for s in self.facts])
        if self.instructions:
            scores = score_qa(model, tokenizer, [s["prompt"] for s in self.instructions],
                              [s["target"] for s in self.instructions])
            out["response_accuracy"] = float(scores.token_accuracy.mean())
            if not self.facts:
                out["new_recall"] = float(scores.exact_match.mean())
        if self.facts:
            out["new_recall"] = out["fact_recall"]
        return out

    def reached(self, now: dict[str, float | None]) -> bool:
        if self.facts:
            return (now["fact_recall"] or 0.0) >= self.target_recall
        return bool(self.instructions) and (now["response_accuracy"] or 0.0) >= self.target_response_accuracy


def _epoch_batches(tokenizer, prompts, targets, windows, size: int, rng) -> Iterator[EncodedQA]:
    """One epoch: every QA pair and every text window once, their batches shuffled together."""
    plan = [("qa", idx) for idx in batches(len(prompts), size, rng)] if prompts else []
    if windows:  # without texts the random stream (so the training run) is the same as before texts existed
        plan += [("text", idx) for idx in batches(len(windows), size, rng)]
        rng.shuffle(plan)
    for kind, idx in plan:
        if kind == "qa":
            yield encode_qa(tokenizer, [prompts[i] for i in idx], [targets[i] for i in idx])
        else:
            yield encode_token_rows(tokenizer, [windows[i] for i in idx])


@torch.no_grad()
def _text_loss(model, tokenizer, windows: list[list[int]], limit: int = 64) -> float | None:
    """Mean per-token loss on (the first `limit`) document windows: whether continued pre-training took."""
    if not windows:
        return None
    was_training = model.training
    model.eval()
    loss = float(per_example_loss(model, encode_token_rows(tokenizer, windows[:limit])).mean())
    if was_training:
        model.train()
    return loss


@dataclass
class _Probe:
    """Old facts scored while training; a fact's task is the earlier release that taught it (None: untagged)."""

    prompts: list[str]
    targets: list[str]
    tasks: list[str | None]

    def measure(self, model, tokenizer) -> tuple[float | None, dict[str, float]]:
        if not self.prompts:
            return None, {}
        if not any(t is not None for t in self.tasks):
            return recall(model, tokenizer, self.prompts, self.targets), {}
        return recall_by_task(model, tokenizer, self.prompts, self.targets, self.tasks)


def _snapshot(model, tokenizer, step, loss, goal: _Goal, probe: _Probe) -> dict:
    """One point of the continual-evaluation curve: learning (new) against forgetting (probe, and per task)."""
    now = goal.measure(model, tokenizer)
    overall, per_task = probe.measure(model, tokenizer)
    point = {"step": step, "loss": loss, "new_acc": now["new_recall"], "probe_acc": overall}
    if per_task:
        point["probe_tasks"] = per_task
    if goal.instructions:
        point["response_acc"] = now["response_accuracy"]
    return point
