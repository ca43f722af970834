"""cluster_score: spend the training budget on what the current model does not know yet, spread over skills.

Steps: drop rows that are not facts; drop exact duplicates; score each fact by the current model's
per-token NLL on its target (high = worth training) and drop facts already known (NLL below min_loss);
drop near-duplicates of higher-scoring selected prompts with the same target; cap each skill cluster;
fill the budget round robin over clusters, best score first; add replay rows from the pool.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from pydantic import Field

from pipelines.core.plugins import MethodConfig, SelectionResult
from pipelines.methods.selection.row_rules import (
    BUDGET,
    CLUSTER_CAP,
    DUPLICATE,
    KNOWN,
    NEAR_DUPLICATE,
    NO_FACT,
    Row,
    assign_clusters,
    build_stats,
    draw_replay,
    fact_key,
    is_fact,
    jaccard,
    norm,
    replay_count,
    word_set,
)


class SelectionConfig(MethodConfig):
    """Parameters of the cluster_score selector (policy key selection.params)."""

    budget: int | None = Field(default=None, ge=1, description="max selected samples (replay comes on top)")
    min_loss: float = Field(default=0.1, ge=0.0, description="per-token NLL below which a fact is already known")
    dedup: bool = True
    near_duplicate_jaccard: float = Field(default=0.8, gt=0.0, le=1.0)
    replay_ratio: float = Field(default=0.15, ge=0.0, lt=1.0, description="share of replay rows in the training rows")
    per_cluster_cap: int | None = Field(default=None, ge=1)
    seed: int = 0
    batch_size: int = Field(default=256, ge=1)


def _score(model, tokenizer, facts: list[Row], batch_size: int) -> list[float]:
    from pipelines.model.lm import score_qa

    if not facts:
        return []
    scores = score_qa(model, tokenizer, [r["prompt"] for r in facts], [r["target"] for r in facts], batch_size)
    return [float(-x) for x in scores.mean_logprob]


def _pruned(row: Row, reason: str, **extra: Any) -> Row:
    return dict(row, prune_reason=reason, **extra)


def select_samples(
    rows: list[Row], model, tokenizer, cfg: SelectionConfig, replay_pool: list[Row] | None = None
) -> SelectionResult:
    if model is None or tokenizer is None:
        raise ValueError("cluster_score scores samples with the current model: pass model and tokenizer")
    pruned: list[Row] = []
    facts: list[Row] = []
    for row in rows:
        if is_fact(row):
            facts.append(row)
        else:
            pruned.append(_pruned(row if isinstance(row, Mapping) else {"row": row}, NO_FACT))

    clusters = assign_clusters(facts, cfg.seed)
    candidates: list[tuple[int, Row]] = []
    first_seen: dict[tuple[str, str], Row] = {}
    for i, (row, cluster) in enumerate(zip(facts, clusters, strict=True)):
        key = fact_key(row)
        if cfg.dedup and key in first_seen:
            pruned.append(_pruned(row, DUPLICATE, cluster=cluster, duplicate_of=first_seen[key].get("id")))
            continue
        first_seen[key] = row
        candidates.append((i, dict(row, cluster=cluster)))

    scores = _score(model, tokenizer, [r for _, r in candidates], cfg.batch_size)
    ranked: list[tuple[int, Row]] = []
    for (i, row), score in zip(candidates, scores, strict=True):
        row["score"] = score
        if score < cfg.min_loss:
            pruned.append(_pruned(row, KNOWN))
        else:
            ranked.append((i, row))
    ranked.sort(key=lambda item: (-item[1]["score"], item[0]))

    if cfg.dedup:
        kept: list[tuple[int, Row]] = []
        by_target: dict[str, list[tuple[frozenset[str], Row]]] = defaultdict(list)
        for i, row in ranked:
            words = word_set(row["prompt"])
            twin = next(
                (other for ws, other in by_target[norm(row["target"])] if jaccard(words, ws) >= cfg.near_duplicate_jaccard),
                None,
            )
            if twin is not None:
                pruned.append(_pruned(row, NEAR_DUPLICATE, duplicate_of=twin.get("id")))
                continue
            by_target[norm(row["target"])].append((words, row))
            kept.append((i, row))
        ranked = kept

    per_cluster: dict[str, list[tuple[int, Row]]] = defaultdict(list)
    for i, row in ranked:
        group = per_cluster[row["cluster"]]
        if cfg.per_cluster_cap is not None and len(group) >= cfg.per_cluster_cap:
            pruned.append(_pruned(row, CLUSTER_CAP))
        else:
            group.append((i, row))

    # Round robin over clusters (the cluster with the best sample first) so a budget covers every skill.
    order = sorted(per_cluster, key=lambda c: (-per_cluster[c][0][1]["score"], c))
    queues = {c: list(per_cluster[c]) for c in order}
    chosen: list[tuple[int, Row]] = []
    limit = cfg.budget if cfg.budget is not None else sum(len(q) for q in queues.values())
    while len(chosen) < limit and any(queues.values()):
        for c in order:
            if len(chosen) >= limit:
                break
            if queues[c]:
                chosen.append(queues[c].pop(0))
    for c in order:
        pruned.extend(_pruned(row, BUDGET) for _, row in queues[c])

    chosen.sort(key=lambda item: item[0])
    samples = [row for _, row in chosen]
    n_replay = replay_count(cfg.replay_ratio, len(samples))
    replay, _ = draw_replay(replay_pool or [], n_replay, {fact_key(r) for r in samples}, cfg.seed)
    stats = build_stats("cluster_score", len(rows), samples, pruned, replay)
    stats["replay_requested"] = n_replay
    return SelectionResult(samples=samples, pruned=pruned, replay=replay, stats=stats)
