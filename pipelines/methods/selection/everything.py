"""all: the baseline selector. Every fact row is trained on, with the same replay as cluster_score.

Benchmarks compare cluster_score against it (training cost and quality for the same cycle).
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import Field

from pipelines.core.plugins import MethodConfig, SelectionResult
from pipelines.methods.selection.row_rules import (
    NO_FACT,
    Row,
    assign_clusters,
    build_stats,
    draw_replay,
    fact_key,
    is_fact,
    replay_count,
)


class AllSelectionConfig(MethodConfig):
    replay_ratio: float = Field(default=0.15, ge=0.0, lt=1.0)
    seed: int = 0


def select_all(
    rows: list[Row], model=None, tokenizer=None, cfg: AllSelectionConfig | None = None, replay_pool: list[Row] | None = None
) -> SelectionResult:
    """No scoring, no pruning (the model is not used); rows without prompt/target are still skipped."""
    cfg = cfg or AllSelectionConfig()
    facts = [r for r in rows if is_fact(r)]
    pruned = [dict(r if isinstance(r, Mapping) else {"row": r}, prune_reason=NO_FACT) for r in rows if not is_fact(r)]
    clusters = assign_clusters(facts, cfg.seed)
    samples = [dict(r, score=None, cluster=c) for r, c in zip(facts, clusters, strict=True)]
    n_replay = replay_count(cfg.replay_ratio, len(samples))
    replay, _ = draw_replay(replay_pool or [], n_replay, {fact_key(r) for r in samples}, cfg.seed)
    stats = build_stats("all", len(rows), samples, pruned, replay)
    stats["replay_requested"] = n_replay
    return SelectionResult(samples=samples, pruned=pruned, replay=replay, stats=stats)
