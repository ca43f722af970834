"""Averaging with the champion per depth group, the ratios chosen on a validation slice (AMA-style).

The candidate learned the new facts and may have lost old ones; the champion kept the old ones. For each group of
consecutive layers (shallow to deep) a ratio r keeps r of the candidate's change. Every combination on the grid is
scored on the new facts (held-out slice of this cycle's samples) and on the retention probe (known facts); the
choice keeps at least `min_new_share` of the candidate's own new-fact recall and, within that, the most retention,
then the most new-fact recall, then the smallest change.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from pydantic import Field, field_validator

from pipelines.core.plugins import MergeResult, MethodConfig
from pipelines.methods.merge.scaled_update import model_depths
from pipelines.methods.update.lora_tools import recall


class AverageConfig(MethodConfig):
    ratios: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0],
                                description="share of the candidate's change each depth group may keep")
    groups: int = Field(2, ge=1, le=4, description="depth groups, shallow to deep, each with its own ratio")
    min_new_share: float = Field(0.95, gt=0, le=1, description="new-fact recall to keep, as a share of the "
                                 "candidate's own")

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, value: list[float]) -> list[float]:
        if not value or any(not 0 <= r <= 1 for r in value):
            raise ValueError("ratios must be a non-empty list of shares between 0 and 1")
        return sorted(set(value))


def _group_of(depth: int, n_layers: int, groups: int) -> int:
    position = (max(depth, 0) + 0.5) / (n_layers + 1)  # embeddings first, head last
    return min(groups - 1, int(position * groups))


def _qa(items: list[dict[str, Any]] | None) -> tuple[list[str], list[str]]:
    items = [i for i in items or [] if i.get("prompt") and i.get("target")]
    return [i["prompt"] for i in items], [i["target"] for i in items]


@torch.no_grad()
def average(champion: Any, candidate: Any, tokenizer: Any, cfg: AverageConfig, *,
            new_facts: list[dict[str, Any]] | None = None, probe: list[dict[str, Any]] | None = None,
            progress: bool = True) -> MergeResult:
    depths, n = model_depths(candidate)
    old = dict(champion.named_parameters())
    params = dict(candidate.named_parameters())
    delta = {k: p.detach().clone() - old[k].to(p.device, p.dtype) for k, p in params.items()}
    group = {k: _group_of(depths[k], n, cfg.groups) for k in params}
    new_p, new_t = _qa(new_facts)
    old_p, old_t = _qa(probe)

    def set_ratios(ratios: tuple[float, ...]) -> None:
        for k, p in params.items():
            p.copy_(old[k].to(p.device, p.dtype) + ratios[group[k]] * delta[k])

    def score() -> tuple[float, float]:
        fresh = recall(candidate, tokenizer, new_p, new_t) if new_p else 1.0
        kept = recall(candidate, tokenizer, old_p, old_t) if old_p else 1.0
        return fresh, kept

    full = tuple([1.0] * cfg.groups)
    set_ratios(full)
    new_full, kept_full = score()
    tried: list[dict[str, Any]] = []
    best, best_key = full, (kept_full, new_full, -float(cfg.groups))
    for ratios in itertools.product(cfg.ratios, repeat=cfg.groups):
        set_ratios(ratios)
        fresh, kept = score()
        tried.append({"ratios": list(ratios), "new_fact_recall": fresh, "retention": kept})
        if fresh + 1e-9 < cfg.min_new_share * new_full:
            continue
        key = (kept, fresh, -sum(ratios))
        if key > best_key:
            best, best_key = ratios, key
    set_ratios(best)
    return MergeResult(model=candidate, stats={
        "ratios": list(best), "groups": cfg.groups, "new_fact_recall": best_key[1], "retention": best_key[0],
        "unmerged": {"new_fact_recall": new_full, "retention": kept_full}, "tried": len(tried)})
