"""Shared parts of the selection methods: row checks, skill clusters, redundancy keys, replay."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from pipelines.core.rows import ContractRow

Row = dict[str, Any]

NO_FACT = "no prompt/target"
DUPLICATE = "duplicate"
NEAR_DUPLICATE = "near_duplicate"
KNOWN = "known"
CLUSTER_CAP = "cluster_cap"
BUDGET = "budget"


def is_fact(row: Any) -> bool:
    """A row with a non-blank prompt and target; what a Python caller hands a selector may be any mapping."""
    if isinstance(row, ContractRow):
        return row.is_question
    return (
        isinstance(row, Mapping)
        and isinstance(row.get("prompt"), str)
        and isinstance(row.get("target"), str)
        and bool(row["prompt"].strip())
        and bool(row["target"].strip())
    )


def _relation(row: Row) -> str | None:
    value = row.relation if isinstance(row, ContractRow) else row.get("relation")
    return value if isinstance(value, str) and value.strip() else None


def norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def fact_key(row: Row) -> tuple[str, str]:
    return norm(row["prompt"]), norm(row["target"])


def word_set(text: str) -> frozenset[str]:
    return frozenset(norm(text).replace("?", " ").replace(".", " ").replace(",", " ").split())


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def assign_clusters(rows: Sequence[Row], seed: int, n_clusters: int | None = None) -> list[str]:
    """Skill cluster per row: its "relation" when present, else a k-means topic over hashed bags of words.

    The relation is the natural skill label of a world fact; free rows fall back to a cheap text
    clustering so that budgets and replay can still be spread over kinds of knowledge.
    """
    labels: list[str | None] = [
        relation if (relation := _relation(r)) else None for r in rows
    ]
    free = [i for i, label in enumerate(labels) if label is None]
    if free:
        k = n_clusters or max(1, round(math.sqrt(len(free) / 2)))
        k = min(k, len(free))
        if k == 1:
            topics = [0] * len(free)
        else:
            from sklearn.cluster import KMeans
            from sklearn.feature_extraction.text import HashingVectorizer

            vec = HashingVectorizer(n_features=2**10, alternate_sign=False, norm="l2")
            x = vec.transform([f"{rows[i]['prompt']} {rows[i]['target']}" for i in free])
            topics = KMeans(n_clusters=k, random_state=seed, n_init=4).fit_predict(x).tolist()
        for i, topic in zip(free, topics, strict=True):
            labels[i] = f"topic_{topic}"
    return [str(label) for label in labels]


def replay_count(ratio: float, n_selected: int) -> int:
    """Replay rows so that replay makes up `ratio` of the training rows: ratio / (1 - ratio) x selected."""
    if n_selected <= 0 or ratio <= 0:
        return 0
    return int(round(ratio / (1.0 - ratio) * n_selected))


def draw_replay(
    pool: Sequence[Row], n: int, exclude: set[tuple[str, str]], seed: int
) -> tuple[list[Row], dict[str, int]]:
    """Draw n pool rows spread evenly over their clusters (round robin over shuffled clusters).

    Rows that are not facts, duplicates within the pool and rows equal to a selected sample are never drawn.
    """
    if n <= 0:
        return [], {}
    seen = set(exclude)
    usable: list[Row] = []
    for row in pool:
        if not is_fact(row):
            continue
        key = fact_key(row)
        if key in seen:
            continue
        seen.add(key)
        usable.append(row)
    if not usable:
        return [], {}
    rng = random.Random(seed)
    clusters = assign_clusters(usable, seed)
    groups: dict[str, list[Row]] = defaultdict(list)
    for row, cluster in zip(usable, clusters, strict=True):
        groups[cluster].append(dict(row, cluster=cluster, replay=True))
    order = sorted(groups)
    rng.shuffle(order)
    for name in order:
        rng.shuffle(groups[name])
    drawn: list[Row] = []
    counts: dict[str, int] = defaultdict(int)
    while len(drawn) < n and any(groups[c] for c in order):
        for name in order:
            if len(drawn) >= n:
                break
            if groups[name]:
                drawn.append(groups[name].pop())
                counts[name] += 1
    return drawn, dict(counts)


def build_stats(
    method: str, n_in: int, samples: list[Row], pruned: list[Row], replay: list[Row]
) -> dict[str, Any]:
    per_cluster: dict[str, dict[str, Any]] = defaultdict(lambda: {"selected": 0, "pruned": 0, "replay": 0})
    for row in samples:
        per_cluster[row["cluster"]]["selected"] += 1
    for row in pruned:
        if row.get("cluster") is not None:
            per_cluster[row["cluster"]]["pruned"] += 1
    for row in replay:
        per_cluster[row["cluster"]]["replay"] += 1
    reasons: dict[str, int] = defaultdict(int)
    for row in pruned:
        reasons[row["prune_reason"]] += 1
    scores = [row["score"] for row in samples if row.get("score") is not None]
    return {
        "method": method,
        "n_in": n_in,
        "n_selected": len(samples),
        "n_pruned": len(pruned),
        "n_replay": len(replay),
        "mean_score": (sum(scores) / len(scores)) if scores else None,
        "prune_reasons": dict(sorted(reasons.items())),
        "per_cluster": {k: per_cluster[k] for k in sorted(per_cluster)},
    }
