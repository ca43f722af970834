"""Continual evaluation: the old-knowledge probe curve recorded while an update trained, and backward transfer
over the release history.

The trainer records points `{"step", "loss", "new_acc", "probe_acc"}` (probe = a sample of old facts);
this module turns them into the card's stability section. The numbers themselves are defined in the
`stability` metric module (min-ACC, WC-ACC, stability gap after De Lange et al., ICLR 2023).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from evals.metrics import load_metric


def stability_metrics(
    curve: Sequence[float],
    acc_before: float,
    current_acc: float | None = None,
) -> dict[str, float | None]:
    """min_acc, wc_acc, final_acc and stability_gap of one old-knowledge probe curve."""
    return load_metric("stability").compute(curve=[list(curve)], acc_before=[acc_before], current_acc=current_acc)


def stability_summary(
    history: Sequence[Mapping[str, Any]],
    acc_before: float | None,
    current_acc: float | None,
    tasks_before: Mapping[str, float] | None = None,
    earlier_minima: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The card's stability section from a trainer's history.

    acc_before is the old-knowledge accuracy before the update (e.g. the champion's retention); when it is
    unknown the first probe point stands in for it. current_acc is the accuracy on the update's own facts
    after training (the candidate's new-fact recall). Without any probe point (nothing trained, or no probe
    set) every number is None: an update that was not observed has no stability to report.

    When the points carry per-task accuracies (`probe_tasks`: one task per earlier release's facts), the numbers
    are De Lange's over k > 2 tasks: each task's curve on its own, its acc_before from `tasks_before`, and its
    minimum taken over every iteration since the task was learned: this update's curve and the lowest value earlier
    updates recorded (`earlier_minima`, task -> min). stability_gap stays this update's own drop.
    """
    curve: list[dict[str, float | None]] = []
    for i, point in enumerate(history):
        probe = point.get("probe_acc")
        if probe is None:
            continue
        entry = {"step": float(point.get("step", i)), "acc": float(probe), "new_acc": point.get("new_acc")}
        if point.get("probe_tasks"):
            entry["tasks"] = dict(point["probe_tasks"])
        curve.append(entry)
    out: dict[str, Any] = {
        "curve": curve,
        "acc_before": acc_before,
        "current_acc": current_acc,
        "n_points": len(curve),
        "min_acc": None,
        "wc_acc": None,
        "final_acc": None,
        "stability_gap": None,
    }
    if not curve:
        return out
    before = float(acc_before) if acc_before is not None else curve[0]["acc"]
    out["acc_before"] = before
    out.update(stability_metrics([p["acc"] for p in curve], before, current_acc))
    tasks = _task_curves(history)
    if tasks:
        out.update(_per_task(tasks, tasks_before or {}, earlier_minima or {}, current_acc))
    return out


def _task_curves(history: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    curves: dict[str, list[float]] = {}
    for point in history:
        for task, acc in (point.get("probe_tasks") or {}).items():
            if acc is not None:
                curves.setdefault(str(task), []).append(float(acc))
    return curves


def _per_task(curves: Mapping[str, list[float]], before: Mapping[str, float], earlier: Mapping[str, float],
              current_acc: float | None) -> dict[str, Any]:
    names = sorted(curves)
    acc_before = [float(before.get(t, curves[t][0])) for t in names]
    this_update = load_metric("stability").compute(curve=[curves[t] for t in names], acc_before=acc_before,
                                                   current_acc=current_acc)
    lifetime = [min([*curves[t], *([float(earlier[t])] if t in earlier else [])]) for t in names]
    k = len(names) + 1
    min_acc = sum(lifetime) / len(lifetime)
    return {
        "min_acc": min_acc,
        "wc_acc": None if current_acc is None else current_acc / k + (1 - 1 / k) * min_acc,
        "final_acc": this_update["final_acc"],
        "stability_gap": this_update["stability_gap"],
        "n_tasks": k,
        "tasks": {t: {"before": b, "min": min(curves[t]), "lifetime_min": m, "final": curves[t][-1]}
                  for t, b, m in zip(names, acc_before, lifetime, strict=True)},
    }


def lifetime_minima(cards: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """task -> the lowest accuracy any of these (earlier releases') cards recorded for it while training."""
    out: dict[str, float] = {}
    for card in cards:
        for task, entry in ((card.get("stability") or {}).get("tasks") or {}).items():
            low = entry.get("lifetime_min", entry.get("min"))
            if low is not None:
                out[task] = min(out.get(task, float(low)), float(low))
    return out


def backward_transfer(history: Sequence[Mapping[str, Any]]) -> float | None:
    """Backward transfer (BWT, Lopez-Paz & Ranzato 2017) over a release history.

    Each entry is one earlier release i (the candidate itself excluded) with
    - "acc_at_release": R_i,i, the recall of release i's new facts measured when i was released;
    - "acc_now": R_T,i, the recall of the same facts by the model being evaluated now.

        BWT = 1/(T-1) * sum_i (R_T,i - R_i,i)

    Negative values mean forgetting of earlier updates, positive values that later updates helped them.
    Entries where either value is None (empty fact set, facts since forgotten on purpose) are left out;
    with no usable entry the result is None.
    """
    deltas: list[float] = []
    for i, entry in enumerate(history):
        for key in ("acc_at_release", "acc_now"):
            if key not in entry:
                raise ValueError(f"history[{i}] lacks '{key}'; each entry needs 'acc_at_release' and 'acc_now'")
        before, now = entry["acc_at_release"], entry["acc_now"]
        if before is None or now is None:
            continue
        deltas.append(float(now) - float(before))
    if not deltas:
        return None
    return sum(deltas) / len(deltas)


__all__ = ["backward_transfer", "lifetime_minima", "stability_metrics", "stability_summary"]
