"""The selection report a person reads beside the cycle: per skill cluster what was chosen, left out and why,
which expert scored it, what replay cost in tokens, and what left the replay pool for good."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "–" if value is None else str(value)


def selection_markdown(method: str, stats: Mapping[str, Any], prune_reasons: Mapping[str, int]) -> str:
    lines = [f"**Selection `{method}`**: {stats.get('n_selected', 0)} of {stats.get('n_in', 0)} rows chosen, "
             f"{stats.get('n_pruned', 0)} left out.", ""]
    per_cluster = stats.get("per_cluster") or {}
    experts = {c["cluster"]: c for c in stats.get("clusters") or [] if isinstance(c, Mapping)}
    if per_cluster:
        lines += ["| Cluster | Chosen | Left out | Replayed | Expert | Expert quality |", "|---|---:|---:|---:|---|---:|"]
        for name, counts in per_cluster.items():
            info = experts.get(name, {})
            lines.append(f"| {name} | {counts.get('selected', 0)} | {counts.get('pruned', 0)} | "
                         f"{counts.get('replay', 0)} | {info.get('expert') or '–'} | {_num(info.get('expert_quality'))} |")
        lines.append("")
    if prune_reasons:
        lines += ["| Left out because | Rows |", "|---|---:|"]
        lines += [f"| {reason} | {n} |" for reason, n in sorted(prune_reasons.items())]
        lines.append("")
    replay = stats.get("replay") or {}
    if replay:
        budget = replay.get("budget_tokens")
        lines.append(f"Old-fact replay ({replay.get('source', '?')}): {replay.get('rows', 0)} facts, "
                     f"{replay.get('tokens', 0)} tokens" + (f" of a {budget}-token budget; {replay.get('due', 0)} "
                     f"were due after a recall interval of {replay.get('recall_interval')} cycles"
                     if budget is not None else "") + ".")
    general = stats.get("general_replay") or {}
    if general.get("budget_tokens"):
        lines.append(f"General replay: {general.get('tokens', 0)} tokens of a {general['budget_tokens']}-token budget "
                     f"from a set of {general.get('set', 0)} texts.")
    pool = stats.get("pool") or {}
    if pool.get("n_pruned"):
        reasons = ", ".join(f"{n} {r}" for r, n in (pool.get("reasons") or {}).items())
        lines.append(f"Replay pool: {pool['n_pruned']} rows pruned for good ({reasons}); {pool.get('n_kept', 0)} kept.")
    return "\n".join(lines).strip() + "\n"


__all__ = ["selection_markdown"]
