"""Replay under a token budget: old facts on a recall-interval schedule, and a fixed set of general text (GeRe).

Why tokens and not a ratio: a ratio of "everything known" grows with the deployment until replay is joint retraining
under another name; a token budget keeps a cycle's cost flat however much the model already knows.

Why an interval: a fact replayed in every cycle costs its tokens every cycle. Spaced like a flash card, it comes
back only after `recall_interval` cycles, the most overdue first, so a small budget rotates through the whole
pool (the view-batch idea of a recall interval, applied per cycle). When a cycle's budget is left over after the due
facts, the not-yet-due ones fill it, least recently seen first.

General replay (Zhang et al., GeRe, 2025) trains on a fixed set of general text kept apart from the `general`
evaluation split the perplexity gate scores; the two must never share a text, and `overlap` says where they do.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipelines.methods.selection.row_rules import Row, draw_replay, norm

OVERLAPS_EVAL = "general_replay_overlaps_eval"


def fact_tokens(tokenizer, row: Row) -> int:
    """Tokens one replayed fact costs: its prompt and target as the trainer encodes them."""
    return len(tokenizer(f"{row['prompt']} {row['target']}", add_special_tokens=False)["input_ids"]) + 1


def text_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1


def last_seen(history: Sequence[Sequence[Row]]) -> dict[str, int]:
    """fact id -> index of the latest cycle that trained on it (as a sample or as replay); history is in cycle order."""
    seen: dict[str, int] = {}
    for i, rows in enumerate(history):
        for row in rows:
            if row.get("role") in ("sample", "replay") and row.get("fact_id") is not None:
                seen[str(row["fact_id"])] = i
    return seen


@dataclass
class ReplayDraw:
    rows: list[Row] = field(default_factory=list)
    tokens: int = 0
    stats: dict[str, Any] = field(default_factory=dict)


def old_replay(pool: Sequence[Row], budget_tokens: int, count_tokens: Callable[[Row], int], *,
               seen: dict[str, int], cycle: int, interval: int, exclude: Iterable[tuple[str, str]] = (),
               seed: int = 0) -> ReplayDraw:
    """Old facts within `budget_tokens`: due ones (last trained `interval` or more cycles ago, or never) first,
    most overdue first, spread over skill clusters; then, if room is left, the rest, least recently seen first."""
    usable, _ = draw_replay(pool, len(pool), set(exclude), seed)  # facts only, deduplicated, with clusters
    rng = random.Random(seed + cycle)
    rng.shuffle(usable)

    def age(row: Row) -> int:
        last = seen.get(str(row.get("fact_id")))
        return cycle - last if last is not None else cycle + interval  # never replayed: due, and first

    due = [r for r in usable if age(r) >= interval]
    rest = [r for r in usable if age(r) < interval]
    order = _spread(sorted(due, key=lambda r: -age(r))) + sorted(rest, key=lambda r: -age(r))
    chosen: list[Row] = []
    used = 0
    for row in order:
        cost = count_tokens(row)
        if used + cost > budget_tokens:
            continue
        chosen.append(row)
        used += cost
    n_due = sum(age(r) >= interval for r in chosen)
    return ReplayDraw(chosen, used, {"budget_tokens": budget_tokens, "tokens": used, "pool": len(usable),
                                     "due": len(due), "replayed_due": n_due, "replayed_early": len(chosen) - n_due,
                                     "recall_interval": interval})


def _spread(rows: list[Row]) -> list[Row]:
    """Interleave clusters (keeping each cluster's order) so a budget that ends early still covers every skill."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(str(row.get("cluster")), []).append(row)
    out: list[Row] = []
    queues = list(groups.values())
    while any(queues):
        for q in queues:
            if q:
                out.append(q.pop(0))
    return out


def general_replay(texts: Sequence[Row], budget_tokens: int, count_tokens: Callable[[str], int], *,
                   cycle: int, seed: int = 0) -> ReplayDraw:
    """A window of the fixed general set within `budget_tokens`, moving on each cycle so the whole set rotates."""
    rows = [r for r in texts if isinstance(r.get("text"), str) and r["text"].strip()]
    if not rows or budget_tokens <= 0:
        return ReplayDraw(stats={"budget_tokens": budget_tokens, "tokens": 0, "set": len(rows)})
    order = sorted(rows, key=lambda r: str(r.get("id")))
    random.Random(seed).shuffle(order)
    start = 0
    # Where this cycle's window starts: after the texts earlier cycles' windows used (same budget each cycle).
    for _ in range(cycle):
        start = _window(order, start, budget_tokens, count_tokens)[1]
    chosen, _ = _window(order, start, budget_tokens, count_tokens)
    used = sum(count_tokens(r["text"]) for r in chosen)
    return ReplayDraw(chosen, used, {"budget_tokens": budget_tokens, "tokens": used, "set": len(rows),
                                     "window_start": start})


def _window(order: list[Row], start: int, budget: int, count: Callable[[str], int]) -> tuple[list[Row], int]:
    out: list[Row] = []
    used = 0
    i = start
    for _ in range(len(order)):
        row = order[i % len(order)]
        cost = count(row["text"])
        if cost > budget and not out:  # one text longer than the whole budget is never drawn
            i += 1
            continue
        if used + cost > budget:
            break
        out.append(row)
        used += cost
        i += 1
    return out, i % len(order)


def overlap(replay_rows: Iterable[Row], eval_rows: Iterable[Row]) -> list[Row]:
    """Rows of the general replay set whose text (whitespace and case aside) is also in the `general` eval split."""
    scored = {norm(r["text"]) for r in eval_rows if isinstance(r.get("text"), str)}
    return [r for r in replay_rows if isinstance(r.get("text"), str) and norm(r["text"]) in scored]


__all__ = ["OVERLAPS_EVAL", "ReplayDraw", "fact_tokens", "general_replay", "last_seen", "old_replay", "overlap",
           "text_tokens"]
