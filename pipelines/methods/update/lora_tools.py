"""Pieces shared by the update and unlearning methods: QA validation, recall, LoRA wrapping.

Target modules come from the architecture table (pipelines/model/architectures.py) so that a policy can
leave them unset and still get the projections that matter (attention and MLP); a family missing from
the table is refused by name rather than adapted on guessed layers.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from pipelines.model.architectures import resolve_architecture
from pipelines.model.lm import pick_device, score_qa


def check_qa(items: Sequence[dict[str, Any]], field: str, allow_empty: bool = False) -> tuple[list[str], list[str]]:
    """Split QA dicts into prompts and targets, naming the argument and row that is malformed."""
    if not isinstance(items, Sequence) or isinstance(items, str | bytes):
        raise ValueError(f"{field} must be a list of dicts with 'prompt' and 'target'")
    if not items and not allow_empty:
        raise ValueError(f"{field} is empty: give at least one dict with 'prompt' and 'target'")
    prompts, targets = [], []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ValueError(f"{field}[{i}] must be a dict with 'prompt' and 'target', got {type(item).__name__}")
        for key in ("prompt", "target"):
            value = item.get(key)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{field}[{i}].{key} must be a non-empty string")
        prompts.append(item["prompt"])
        targets.append(item["target"])  # as given: a leading space is part of the answer for BPE tokenizers
    return prompts, targets


def check_texts(texts: Sequence[str], field: str) -> list[str]:
    """Plain training texts (documents), naming the argument and index of one that is not a non-empty string."""
    if not isinstance(texts, Sequence) or isinstance(texts, str | bytes):
        raise ValueError(f"{field} must be a list of strings")
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{field}[{i}] must be a non-empty string")
    return list(texts)


def recall(model, tokenizer, prompts: Sequence[str], targets: Sequence[str]) -> float:
    """Share of facts reproduced exactly by greedy decoding (teacher-forced check)."""
    if not prompts:
        return float("nan")
    return float(score_qa(model, tokenizer, list(prompts), list(targets)).exact_match.mean())


def recall_by_task(model, tokenizer, prompts: Sequence[str], targets: Sequence[str],
                   tasks: Sequence[str | None]) -> tuple[float, dict[str, float]]:
    """Exact-match recall overall and per task (the earlier release that taught each fact), from one scoring pass."""
    if not prompts:
        return float("nan"), {}
    hits = score_qa(model, tokenizer, list(prompts), list(targets)).exact_match
    groups: dict[str, list[float]] = {}
    for task, hit in zip(tasks, hits, strict=True):
        if task is not None:
            groups.setdefault(str(task), []).append(float(hit))
    return float(hits.mean()), {task: sum(v) / len(v) for task, v in sorted(groups.items())}


def is_conv1d(module: torch.nn.Module) -> bool:
    """GPT-2's Conv1D stores weights as [in, out]; edits and LoRA must know it."""
    return type(module).__name__ == "Conv1D"


def default_target_modules(model) -> list[str]:
    """Projections to adapt when the policy names none, from the architecture table; all must exist in the model."""
    arch = resolve_architecture(model)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in arch.lora_targets if t not in present]
    if missing:
        raise ValueError(
            f"LoRA targets {missing} of the {arch.name!r} entry in pipelines/model/architectures.py are not in this model; "
            "fix: set update.params.target_modules in the policy, or correct lora_targets in the table"
        )
    return list(arch.lora_targets)


def wrap_lora(
    model,
    r: int,
    alpha: int,
    dropout: float,
    target_modules: list[str] | None,
    trainable_token_indices: list[int] | None = None,
):
    """A PEFT LoRA model over the given (or default) projections; Conv1D layouts are handled."""
    from peft import LoraConfig, get_peft_model

    targets = list(target_modules) if target_modules else default_target_modules(model)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in targets if t not in present]
    if missing:
        raise ValueError(
            f"target_modules {missing} not found in this {model.config.model_type} model; "
            f"available layer names include {sorted(n for n in present if n)[:20]}"
        )
    conv = any(is_conv1d(m) and name.rsplit(".", 1)[-1] in targets for name, m in model.named_modules())
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        fan_in_fan_out=conv,
        trainable_token_indices=trainable_token_indices or None,
        bias="none",
    )
    return get_peft_model(model, config)


def working_copy(model) -> torch.nn.Module:
    """A deep copy on the training device, so the caller's model is never changed."""
    clone = copy.deepcopy(model)
    return clone.to(pick_device())


def seed_everything(seed: int) -> random.Random:
    """Seeds torch (adapter init, dropout) and returns a private RNG for batch sampling."""
    torch.manual_seed(seed)
    return random.Random(seed)


def batches(n: int, size: int, rng: random.Random) -> list[list[int]]:
    """Shuffled index batches covering range(n) once."""
    order = list(range(n))
    rng.shuffle(order)
    return [order[i : i + size] for i in range(0, n, size)]
