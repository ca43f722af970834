"""Permanent pruning of the replay pool (Adapt-∞'s cluster-level pruning): keep it small and free of repeats.

A pool that only grows makes every cycle's replay draw costlier and more redundant. Rows that say the same thing
as an earlier kept row (MiniLM cosine at or above `near_duplicate`) go first; if the pool is still over `max_size`,
the most redundant rows (the highest nearest-neighbour similarity; of a tied pair, the newer) go until it fits.
The caller records the pruned ids and passes them back as `already_pruned`, so a pruned row never returns.
Tombstoned rows vanish without a record: a forget request already removed them, and a pruning record would keep
(or, when replayed, resurrect) exactly what was forgotten.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.methods.selection.row_rules import NEAR_DUPLICATE, NO_FACT, Row, is_fact

POOL_SIZE = "pool_size"
_EPS = 1e-6  # float slack so that identical texts count as duplicates at near_duplicate = 1.0


@dataclass
class PoolPruning:
    kept: list[Row] = field(default_factory=list)
    pruned: list[dict[str, Any]] = field(default_factory=list)  # newly pruned this call: {"id", "reason", ...}
    n_previously_pruned: int = 0

    def report(self) -> dict[str, Any]:
        """JSON-plain summary for selection stats; `pruned` is what the cycle records for good."""
        return {"n_kept": len(self.kept), "n_pruned": len(self.pruned), "n_previously_pruned": self.n_previously_pruned,
                "reasons": dict(sorted(Counter(p["reason"] for p in self.pruned).items())), "pruned": self.pruned}


def row_text(row: Row) -> str | None:
    """What a pool row says: "prompt target" for a fact, else its text."""
    if is_fact(row):
        return f"{row['prompt']} {row['target']}"
    text = row.get("text") if isinstance(row, Mapping) else None
    return text if isinstance(text, str) and text.strip() else None


def _unit(vectors: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _near_duplicates(x: np.ndarray, threshold: float) -> dict[int, tuple[int, float]]:
    """i -> (j, cosine) for each row whose most similar earlier *kept* row j reaches the threshold (rows are
    judged in order; a row pruned here is not a reference for later rows)."""
    import faiss

    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    lims, sims, ids = index.range_search(x, float(threshold) - 2 * _EPS)
    dup: dict[int, tuple[int, float]] = {}
    for i in range(len(x)):
        best: tuple[int, float] | None = None
        for j, s in zip(ids[lims[i]:lims[i + 1]].tolist(), sims[lims[i]:lims[i + 1]].tolist(), strict=True):
            if j >= i or j in dup or s < threshold - _EPS:
                continue
            if best is None or s > best[1] or (s == best[1] and j < best[0]):
                best = (j, s)
        if best is not None:
            dup[i] = best
    return dup


def _shrink(x: np.ndarray, max_size: int) -> list[tuple[int, int | None, float]]:
    """Remove rows, most redundant first, until max_size remain: (removed, its nearest remaining row, cosine).

    Greedy on nearest-neighbour cosine among the rows still there; a tie goes to the later row, so older rows stay."""
    n = len(x)
    alive = np.ones(n, bool)

    def nearest(i: int) -> tuple[int | None, float]:
        sims = x @ x[i]
        sims[~alive] = -np.inf
        sims[i] = -np.inf
        j = int(np.argmax(sims))
        return (j, float(sims[j])) if np.isfinite(sims[j]) else (None, -2.0)

    nn = [nearest(i) for i in range(n)]
    heap = [(-s, -i, i) for i, (_, s) in enumerate(nn)]
    heapq.heapify(heap)
    removed: list[tuple[int, int | None, float]] = []
    while alive.sum() > max_size and heap:
        neg_s, _, i = heapq.heappop(heap)
        if not alive[i] or -neg_s != nn[i][1]:
            continue  # stale entry
        j, s = nn[i]
        if j is not None and not alive[j]:  # its neighbour left: look again
            nn[i] = nearest(i)
            heapq.heappush(heap, (-nn[i][1], -i, i))
            continue
        alive[i] = False
        removed.append((i, j, s))
    return removed


def prune_pool(pool: Sequence[Row], embed: Callable[[list[str]], np.ndarray], max_size: int | None = None,
               near_duplicate: float | None = 0.95, already_pruned: Collection[str] = frozenset(),
               tombstoned: Callable[[Row], bool] | None = None) -> PoolPruning:
    """Drop tombstoned and previously pruned rows, then prune near-duplicates and, over max_size, the most redundant.

    embed: texts -> vectors (MiniLM in production); normalised here, so cosine is the FAISS inner product.
    Deterministic for a given pool order and embedder."""
    if max_size is not None and max_size < 0:
        raise ValueError(f"max_size must be >= 0, got {max_size}")
    previously = set(already_pruned)
    out = PoolPruning()
    rows: list[Row] = []
    texts: list[str] = []
    for row in pool:
        if tombstoned is not None and tombstoned(row):
            continue
        if isinstance(row, Mapping) and row.get("id") in previously:
            out.n_previously_pruned += 1
            continue
        text = row_text(row)
        if text is None:  # nothing to replay: never drawn, so it need not stay
            out.pruned.append({"id": row.get("id") if isinstance(row, Mapping) else None, "reason": NO_FACT})
            continue
        rows.append(row)
        texts.append(text)
    if not rows:
        return out
    x = _unit(embed(texts))
    if x.shape[0] != len(rows):
        raise ValueError(f"embed returned {x.shape[0]} vectors for {len(rows)} texts")
    keep = np.ones(len(rows), bool)
    if near_duplicate is not None:
        for i, (j, s) in sorted(_near_duplicates(x, near_duplicate).items()):
            keep[i] = False
            out.pruned.append({"id": rows[i].get("id"), "reason": NEAR_DUPLICATE, "duplicate_of": rows[j].get("id"),
                               "similarity": round(s, 6)})
    left = np.flatnonzero(keep)
    if max_size is not None and len(left) > max_size:
        for i, j, s in _shrink(x[left], max_size):
            keep[left[i]] = False
            out.pruned.append({"id": rows[left[i]].get("id"), "reason": POOL_SIZE,
                               "nearest": None if j is None else rows[left[j]].get("id"), "similarity": round(s, 6)})
    out.kept = [row for row, k in zip(rows, keep, strict=True) if k]
    return out


__all__ = ["POOL_SIZE", "PoolPruning", "prune_pool", "row_text"]
