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
) -> dict[str, Any]:
    """The card's stability section from a trainer's history.

    acc_before is the old-knowledge accuracy before the update (e.g. the champion's retention); when it is
    unknown the first probe point stands in for it. current_acc is the accuracy on the update's own facts
    after training (the candidate's new-fact recall). Without any probe point (nothing trained, or no probe
    set) every number is None: an update that was not observed has no stability to report.
    """
    curve: list[dict[str, float | None]] = []
    for i, point in enumerate(history):
        probe = point.get("probe_acc")
        if probe is None:
            continue
        curve.append({"step": float(point.get("step", i)), "acc": float(probe), "new_acc": point.get("new_acc")})
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


__all__ = ["backward_transfer", "stability_metrics", "stability_summary"]
