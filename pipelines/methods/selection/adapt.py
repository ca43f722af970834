"""adapt: Adapt-∞-style dynamic selection (Maharana et al., ICLR 2025): a different selector expert per skill.

No single score picks the best training rows for every kind of knowledge, so each pseudo-skill gets the expert that
works best on it. Steps: drop non-facts and exact duplicates; sketch each fact by its gradient on a fresh LoRA
adapter and cluster the sketches into pseudo-skills (FAISS k-means); prune facts the model already knows (NLL below
min_loss: the cycle keeps those as replay); per skill, hold out `holdout_share` of its rows and keep the expert whose
top picks among the rest would lower the held-out rows' loss most (see experts.expert_quality); spend the budget over
skills in proportion to their size, at least one row each, best-scored first by the skill's expert; draw replay from
the pool after pruning it for good (pool.prune_pool).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from pipelines.core.plugins import MethodConfig, SelectionResult
from pipelines.methods.selection import experts as ex
from pipelines.methods.selection.pool import prune_pool
from pipelines.methods.selection.row_rules import (
    BUDGET,
    DUPLICATE,
    KNOWN,
    NO_FACT,
    Row,
    build_stats,
    draw_replay,
    fact_key,
    is_fact,
    replay_count,
)

ExpertName = Literal["loss", "el2n", "grad_norm", "density"]
CHOSEN_ON_SKILL = "skill"  # the expert won on the skill's own held-out slice
CHOSEN_ON_BATCH = "batch"  # the skill was too small to hold a row out: the winner over all candidates
CHOSEN_BY_DEFAULT = "default"  # fewer than two candidates in the whole batch: the first listed expert


class AdaptConfig(MethodConfig):
    """Parameters of the adapt selector (policy key selection.params)."""

    budget: int | None = Field(default=None, ge=1, description="max selected samples (replay comes on top)")
    min_loss: float = Field(default=0.1, ge=0.0, description="per-token NLL below which a fact is already known")
    replay_ratio: float = Field(default=0.15, ge=0.0, lt=1.0, description="share of replay rows in the training rows")
    n_clusters: int | None = Field(default=None, ge=1, description="pseudo-skills; default round(sqrt(n / 2))")
    sketch_dim: int = Field(default=64, ge=2, le=4096, description="size of a fact's projected gradient sketch")
    lora_rank: int = Field(default=8, ge=1, le=256, description="rank of the fresh LoRA adapter the sketch stands on")
    experts: list[ExpertName] = Field(default_factory=lambda: list(ex.EXPERTS), min_length=1,
                                      description="selector experts a skill may choose from; ties go to the first")
    holdout_share: float = Field(default=0.2, gt=0.0, lt=1.0, description="share of a skill held out to judge experts")
    pool_max_size: int | None = Field(default=None, ge=1, description="replay pool rows kept after pruning")
    pool_near_duplicate: float | None = Field(default=0.95, gt=0.0, le=1.0,
                                              description="MiniLM cosine at which a pool row repeats an earlier one")
    seed: int = 0
    batch_size: int = Field(default=32, ge=1, description="rows per forward (and backward) pass")

    @field_validator("experts")
    @classmethod
    def _each_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"list each expert once, got {value}")
        return value


def _pruned(row: Row, reason: str, **extra: Any) -> Row:
    return dict(row, prune_reason=reason, **extra)


def apportion(sizes: dict[str, int], budget: int | None) -> dict[str, int]:
    """Rows per skill: all when the budget covers them; else one per skill (largest skills first when the budget
    is smaller than the number of skills) and the rest in proportion to what each skill has left, largest
    remainder first (ties by name)."""
    total = sum(sizes.values())
    if budget is None or budget >= total:
        return dict(sizes)
    ranked = sorted((c for c in sizes if sizes[c] > 0), key=lambda c: (-sizes[c], c))
    quota = dict.fromkeys(sizes, 0)
    if budget < len(ranked):
        for c in ranked[:budget]:
            quota[c] = 1
        return quota
    for c in ranked:
        quota[c] = 1
    rest = budget - len(ranked)
    spare = {c: sizes[c] - 1 for c in ranked}
    room = sum(spare.values())
    exact = {c: rest * spare[c] / room for c in ranked}
    for c in ranked:
        quota[c] += int(exact[c])
    short = budget - sum(quota.values())
    for c in sorted(ranked, key=lambda c: (-(exact[c] - int(exact[c])), c))[:short]:
        quota[c] += 1
    return quota


def _expert_scores(names: list[str], model, tokenizer, facts: list[Row], nll: np.ndarray, sketches: ex.Sketches,
                   batch_size: int) -> dict[str, np.ndarray]:
    prompts, targets = [r["prompt"] for r in facts], [r["target"] for r in facts]
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name == "loss":
            out[name] = nll
        elif name == "el2n":
            out[name] = ex.el2n_scores(model, tokenizer, prompts, targets, batch_size)
        elif name == "grad_norm":
            out[name] = sketches.grad_norm.astype(np.float64)
        else:
            out[name] = ex.density_scores(ex.embed_texts([f"{p} {t}" for p, t in zip(prompts, targets, strict=True)]))
    return out


def _pool(replay_pool: list[Row] | None, cfg: AdaptConfig) -> tuple[list[Row], dict[str, Any]]:
    pool = list(replay_pool or [])
    if not pool or (cfg.pool_max_size is None and cfg.pool_near_duplicate is None):
        return pool, {"n_kept": len(pool), "n_pruned": 0, "reasons": {}, "pruned": []}
    pruning = prune_pool(pool, ex.embed_texts, cfg.pool_max_size, cfg.pool_near_duplicate)
    return pruning.kept, pruning.report()


def select_adaptive(
    rows: list[Row], model, tokenizer, cfg: AdaptConfig, replay_pool: list[Row] | None = None
) -> SelectionResult:
    """Rows keep "cluster" (their pseudo-skill), "score" (the model's per-token NLL, as for every selector),
    "expert" (the skill's expert) and "expert_score" (that expert's score, by which the skill's rows were ranked)."""
    if model is None or tokenizer is None:
        raise ValueError("adapt sketches and scores samples with the current model: pass model and tokenizer")
    from pipelines.model.lm import score_qa

    pruned: list[Row] = []
    facts: list[Row] = []
    first_seen: dict[tuple[str, str], Row] = {}
    for row in rows:
        if not is_fact(row):
            pruned.append(_pruned(row if isinstance(row, Mapping) else {"row": row}, NO_FACT))
        elif fact_key(row) in first_seen:
            pruned.append(_pruned(row, DUPLICATE, duplicate_of=first_seen[fact_key(row)].get("id")))
        else:
            first_seen[fact_key(row)] = row
            facts.append(row)

    prompts, targets = [r["prompt"] for r in facts], [r["target"] for r in facts]
    sketches = ex.gradient_sketches(model, tokenizer, prompts, targets, sketch_dim=cfg.sketch_dim,
                                    lora_rank=cfg.lora_rank, seed=cfg.seed, batch_size=cfg.batch_size)
    skills = ex.kmeans_skills(sketches.vectors, cfg.n_clusters, cfg.seed)
    nll = -score_qa(model, tokenizer, prompts, targets, cfg.batch_size).mean_logprob.astype(np.float64)
    for i, row in enumerate(facts):
        if nll[i] < cfg.min_loss:
            pruned.append(_pruned(row, KNOWN, cluster=skills[i], score=float(nll[i])))
    alive = np.array([i for i in range(len(facts)) if nll[i] >= cfg.min_loss], dtype=int)
    scores = _expert_scores(list(cfg.experts), model, tokenizer, facts, nll, sketches, cfg.batch_size) if len(alive) else {}

    names = sorted(set(skills), key=lambda c: int(c.split("_")[1]))
    members = {c: alive[[skills[i] == c for i in alive]] if len(alive) else alive for c in names}
    quota = apportion({c: len(members[c]) for c in names}, cfg.budget)
    rng = np.random.default_rng(cfg.seed)
    share = (min(cfg.budget, len(alive)) / len(alive)) if cfg.budget is not None and len(alive) else 1.0
    overall = ex.choose_expert(scores, sketches.vectors, alive, cfg.holdout_share, share if share < 1 else 0.5, rng)

    chosen: list[tuple[int, Row]] = []
    clusters: list[dict[str, Any]] = []
    for c in names:
        idx = members[c]
        frac = quota[c] / len(idx) if len(idx) else 1.0
        verdict = ex.choose_expert(scores, sketches.vectors, idx, cfg.holdout_share, frac if frac < 1 else 0.5, rng)
        expert: str | None
        if not len(idx):  # every row of the skill is known: nothing to rank
            expert, qualities, source = None, {}, None
        elif verdict is not None:
            (expert, qualities), source = verdict, CHOSEN_ON_SKILL
        elif overall is not None:
            (expert, qualities), source = overall, CHOSEN_ON_BATCH
        else:
            expert, qualities, source = cfg.experts[0], {}, CHOSEN_BY_DEFAULT
        ranked = sorted(idx.tolist(), key=lambda i: (-scores[expert][i], i)) if expert else []
        for rank, i in enumerate(ranked):
            row = dict(facts[i], cluster=c, score=float(nll[i]), expert=expert,
                       expert_score=float(scores[expert][i]))
            if rank < quota[c]:
                chosen.append((i, row))
            else:
                pruned.append(_pruned(row, BUDGET))
        n_known = sum(1 for s in skills if s == c) - len(idx)
        clusters.append({"cluster": c, "size": n_known + len(idx), "candidates": len(idx), "expert": expert,
                         "expert_quality": qualities.get(expert) if expert else None, "chosen_on": source,
                         "qualities": qualities, "selected": min(quota[c], len(idx)),
                         "pruned": n_known + len(idx) - min(quota[c], len(idx))})

    chosen.sort(key=lambda item: item[0])
    samples = [row for _, row in chosen]
    pool, pool_report = _pool(replay_pool, cfg)
    n_replay = replay_count(cfg.replay_ratio, len(samples))
    replay, _ = draw_replay(pool, n_replay, {fact_key(r) for r in samples}, cfg.seed)
    stats = build_stats("adapt", len(rows), samples, pruned, replay)
    stats.update(replay_requested=n_replay, clusters=clusters, pool=pool_report,
                 experts_chosen=dict(sorted(Counter(c["expert"] for c in clusters if c["expert"]).items())),
                 sketch={"dim": cfg.sketch_dim, "lora_rank": cfg.lora_rank, "modules": sketches.modules})
    return SelectionResult(samples=samples, pruned=pruned, replay=replay, stats=stats)


__all__ = ["AdaptConfig", "apportion", "select_adaptive"]
