"""Evaluation card: the human- and machine-readable record of why a candidate passed or failed.

Written next to the release: card.json (the dict as given, made JSON-safe), card.md (tables a reviewer
reads before approving) and PNG plots. Rendering never fails on missing parts: a card for a first
release has no champion, a card for an edit-only cycle has no training curve.
"""

from __future__ import annotations

import base64
import json
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evals.names import LOWER_IS_BETTER

_UNBOUNDED = frozenset({"perplexity", "forget_log_likelihood"})


def _jsonable(obj: Any) -> Any:
    """Plain JSON types only: pydantic models and numpy scalars converted, NaN/inf become null."""
    if hasattr(obj, "model_dump"):
        return _jsonable(obj.model_dump())
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, int):
        return obj
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return _jsonable(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return str(obj)


def _num(x: Any) -> str:
    if x is None:
        return "—"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, float)):
        return f"{x:.4g}"
    return str(x)


def _delta(value: Any, champion: Any) -> float | None:
    if isinstance(value, (int, float)) and isinstance(champion, (int, float)):
        return float(value) - float(champion)
    return None


def _curve_points(curve: Any) -> tuple[list[float], list[float]]:
    """Accept [acc, …] or [{"step": s, "acc": a}, …]; returns (steps, accuracies)."""
    steps: list[float] = []
    accs: list[float] = []
    for i, point in enumerate(curve or []):
        if isinstance(point, Mapping):
            acc = point.get("acc", point.get("accuracy"))
            step = point.get("step", i)
        else:
            acc, step = point, i
        if acc is None:
            continue
        steps.append(float(step))
        accs.append(float(acc))
    return steps, accs


def _forgetting_section(forgetting: Mapping[str, Any]) -> list[str]:
    """Before (champion) and after (candidate) evidence for the honoured forget requests."""
    if not forgetting:
        return []
    lines = ["## Forgetting evidence", ""]
    comparison = forgetting.get("comparison")
    if comparison:
        lines += [f"Forget quality compares with: **{comparison}**.", ""]
    lines += ["| Check | Before (champion) | After (candidate) |", "|---|---:|---:|"]
    before, after = forgetting.get("before") or {}, forgetting.get("after") or {}
    for key in ("forget_recall", "forget_log_likelihood", "forget_quality", "forget_mia_auc", "forget_mia_reference",
                "forget_probe_excess", "forget_probe_p",
                "probe_forget_accuracy", "probe_unseen_accuracy"):
        if key in before or key in after:
            lines.append(f"| {key} | {_num(before.get(key))} | {_num(after.get(key))} |")
    for rid, checks in (forgetting.get("requests") or {}).items():
        failed = [k for k, ok in checks.items() if not ok]
        lines.append("")
        lines.append(f"- Request `{rid}`: " + ("every check held" if not failed else "FAILED " + ", ".join(failed)))
    lines.append("")
    return lines


def _overrides_section(overrides: Mapping[str, Any] | None) -> list[str]:
    """What the batch's own sidecar changed of the policy (or why it was quarantined), with its content hash."""
    if not overrides:
        return []
    lines = ["## Batch policy overrides", "", f"`{overrides.get('file')}` (sha256 `{overrides.get('sha256', '')[:16]}`)", ""]
    if overrides.get("refused"):
        lines += ["Quarantined, nothing applied:", ""] + [f"- {r}" for r in overrides["refused"]]
    else:
        lines += [f"- `{k}` = {v}" for k, v in (overrides.get("applied") or {}).items()]
    return [*lines, ""]


def _history_section(history: list[Mapping[str, Any]]) -> list[str]:
    """Backward transfer: each earlier release's facts, recalled then and by this candidate now."""
    if not history:
        return []
    lines = ["## Earlier releases' facts (backward transfer)", "",
             "| Release | Facts | Recall at release | Recall now | Change |", "|---|---:|---:|---:|---:|"]
    for h in history:
        d = _delta(h.get("acc_now"), h.get("acc_at_release"))
        lines.append(f"| {h.get('release_id')} | {h.get('n', '—')} | {_num(h.get('acc_at_release'))} | "
                     f"{_num(h.get('acc_now'))} | {'—' if d is None else f'{d:+.3f}'} |")
    lines.append("")
    return lines


def card_markdown_for_ui(card_dir: Path, release_id: str | None = None) -> str:
    """The card as the UI shows it: titled with the registered release and its plots inlined as data URIs, since
    the UI resolves a relative image against its own pages and would fetch HTML instead of the PNG."""
    card_dir = Path(card_dir)
    data = json.loads((card_dir / "card.json").read_text(encoding="utf-8"))
    if release_id:
        data["release_id"] = f"{release_id}, {data.get('release_id', 'candidate')}"
    plots = {name: card_dir / file for name, file in (("stability_plot", "stability.png"), ("deltas_plot", "deltas.png"))
             if (card_dir / file).is_file()}
    return _markdown(data, plots, inline=True)


def _image(path: Path, inline: bool) -> str:
    if not inline:
        return path.name
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _markdown(card: Mapping[str, Any], plots: Mapping[str, Path], inline: bool = False) -> str:
    lines: list[str] = []
    decision = card.get("decision") or {}
    verdict = decision.get("passed")
    status = "PASSED" if verdict else ("FAILED" if verdict is False else "not decided")
    lines += [f"# Evaluation card — {card.get('release_id', '?')}", ""]
    lines += [f"- Cycle: {card.get('cycle', '—')}", f"- Created: {card.get('created_at', '—')}", f"- Gates: **{status}**", ""]

    versions = card.get("versions") or {}
    lines += ["## Versions", "", "| Part | Version |", "|---|---|"]
    for part in ("data", "model", "policy", "code"):
        lines.append(f"| {part} | `{versions.get(part, '—')}` |")
    for part, version in versions.items():
        if part not in ("data", "model", "policy", "code"):
            lines.append(f"| {part} | `{version}` |")
    lines.append("")
    lines += _overrides_section(card.get("batch_overrides"))

    metrics = card.get("metrics") or {}
    champion = card.get("champion_metrics") or {}
    lines += ["## Metrics", "", "| Metric | Candidate | Champion | Delta |", "|---|---:|---:|---:|"]
    for name, value in metrics.items():
        d = _delta(value, champion.get(name))
        arrow = ""
        if d is not None and d != 0:
            better = (d < 0) if name in LOWER_IS_BETTER else (d > 0)
            arrow = " ▲" if better else " ▼"
        delta_text = "—" if d is None else f"{d:+.4g}{arrow}"
        lines.append(f"| {name} | {_num(value)} | {_num(champion.get(name))} | {delta_text} |")
    lines.append("")

    sources = card.get("set_sources") or {}
    if sources:
        sizes = card.get("set_sizes") or {}
        lines += ["## Evaluation sets", "", "| Set | Items | Source |", "|---|---:|---|"]
        for name, source in sources.items():
            size = sizes.get(name if name != "general" else "general_text", "")
            lines.append(f"| {name} | {size} | {source} |")
        lines.append("")
    if card.get("prompt_format"):
        lines += [f"Prompts are scored as the model is used: {card['prompt_format']}.", ""]

    verdicts = decision.get("verdicts") or []
    lines += ["## Gates", ""]
    if verdicts:
        lines += ["| Metric | Threshold | Value | Champion | Verdict | Reason |", "|---|---|---:|---:|---|---|"]
        for v in verdicts:
            mark = "pass" if v.get("passed") else ("FAIL" if v.get("required", True) else "fail (advisory)")
            lines.append(
                f"| {v.get('metric')} | {v.get('threshold', '')} | {_num(v.get('value'))} | "
                f"{_num(v.get('champion_value'))} | {mark} | {v.get('reason', '')} |"
            )
    else:
        lines.append("No gates were evaluated.")
    lines.append("")

    lines += _forgetting_section(card.get("forgetting") or {})
    lines += _history_section(card.get("history") or [])

    stability = card.get("stability") or {}
    lines += ["## Stability during training", ""]
    numbers = {k: v for k, v in stability.items() if k not in ("curve", "tasks")}
    if numbers:
        lines += ["| Number | Value |", "|---|---:|"]
        lines += [f"| {k} | {_num(v)} |" for k, v in numbers.items()]
    tasks = stability.get("tasks") or {}
    if tasks:
        lines += ["", "Per earlier task (the facts each earlier part of the data taught):", "",
                  "| Task | Before | Min this update | Min since learned | Final |", "|---|---:|---:|---:|---:|"]
        lines += [f"| {t} | {_num(e.get('before'))} | {_num(e.get('min'))} | {_num(e.get('lifetime_min'))} | "
                  f"{_num(e.get('final'))} |" for t, e in tasks.items()]
    _, accs = _curve_points(stability.get("curve"))
    lines.append("")
    lines.append(f"Probe evaluations during training: {len(accs)}.")
    lines.append("")

    if plots:
        lines += ["## Plots", ""]
        titles = {"stability_plot": "Stability during training", "deltas_plot": "Metric deltas vs champion"}
        lines += [f"![{titles.get(name, name)}]({_image(path, inline)})" for name, path in plots.items()]
        lines.append("")

    notes = card.get("notes")
    if notes:
        lines += ["## Notes", ""]
        lines += [f"- {n}" for n in notes] if isinstance(notes, (list, tuple)) else [str(notes)]
        lines.append("")
    return "\n".join(lines)


def _pyplot():
    """matplotlib on the Agg backend, its font cache kept in MEMGOV_HOME unless MPLCONFIGDIR is set."""
    if "matplotlib" not in sys.modules:
        from evals.metrics import memgov_home

        os.environ.setdefault("MPLCONFIGDIR", str(memgov_home() / "matplotlib"))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_stability(stability: Mapping[str, Any], path: Path) -> Path | None:
    steps, accs = _curve_points(stability.get("curve"))
    if not accs:
        return None
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, accs, marker="o", markersize=3, label="old-knowledge probe accuracy")
    per_task: dict[str, list[tuple[float, float]]] = {}
    for i, p in enumerate(stability.get("curve") or []):
        for task, acc in ((p.get("tasks") if isinstance(p, Mapping) else None) or {}).items():
            if isinstance(acc, (int, float)):
                per_task.setdefault(str(task), []).append((float(p.get("step", i)), float(acc)))
    for task, points in sorted(per_task.items())[:8]:  # more lines than that is noise, the table has them all
        ax.plot(*zip(*points, strict=True), linewidth=0.8, alpha=0.6, label=f"task {task}")
    learning = [(float(p.get("step", i)), float(p["new_acc"])) for i, p in enumerate(stability.get("curve") or [])
                if isinstance(p, Mapping) and isinstance(p.get("new_acc"), (int, float))]
    if learning:
        ax.plot(*zip(*learning, strict=True), color="tab:green", alpha=0.7, linewidth=1, label="new-fact accuracy")
    min_acc = stability.get("min_acc")
    if isinstance(min_acc, (int, float)):
        ax.axhline(min_acc, color="tab:red", linestyle="--", linewidth=1, label=f"min-ACC {min_acc:.3g}")
        lowest = accs.index(min(accs))
        ax.scatter([steps[lowest]], [accs[lowest]], color="tab:red", zorder=3)
    before = stability.get("acc_before")
    if isinstance(before, (int, float)):
        ax.axhline(before, color="tab:gray", linestyle=":", linewidth=1, label=f"before update {before:.3g}")
    ax.set_xlabel("training step")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Stability during training")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_deltas(metrics: Mapping[str, Any], champion: Mapping[str, Any], path: Path) -> Path | None:
    # Accuracy-like metrics live in [0, 1]: plot their difference. Unbounded ones (perplexity,
    # log-likelihood) are plotted as a relative change so that every bar shares one scale.
    pairs: list[tuple[str, float]] = []
    for name, value in metrics.items():
        d = _delta(value, champion.get(name))
        if d is None or not math.isfinite(d):
            continue
        if name in _UNBOUNDED:
            base = abs(float(champion[name]))
            if base == 0:
                continue
            pairs.append((f"{name} (relative)", d / base))
        else:
            pairs.append((name, d))
    if not pairs:
        return None
    plt = _pyplot()

    names = [n for n, _ in pairs]
    deltas = [d for _, d in pairs]
    colours = [
        "tab:green"
        if ((d < 0) if n.split(" ")[0] in LOWER_IS_BETTER else (d > 0))
        else ("tab:gray" if d == 0 else "tab:red")
        for n, d in pairs
    ]
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1.2))
    bars = ax.barh(names, deltas, color=colours)
    ax.bar_label(bars, labels=[f"{d:+.3g}" for d in deltas], fontsize=8, padding=2)
    ax.margins(x=0.2)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("candidate − champion (green: better)")
    ax.set_title("Metric deltas vs champion")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def render_card(card: Mapping[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write card.json, card.md and the plots that have data; return their paths by kind.

    Keys of the result: "json", "markdown", and when drawn "stability_plot", "deltas_plot".
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = _jsonable(card)
    if not isinstance(data, dict):
        raise ValueError("card must be a dict with release_id, versions, metrics, decision, stability …")

    plots: dict[str, Path] = {}
    stab = _plot_stability(data.get("stability") or {}, out_dir / "stability.png")
    if stab is not None:
        plots["stability_plot"] = stab
    deltas = _plot_deltas(data.get("metrics") or {}, data.get("champion_metrics") or {}, out_dir / "deltas.png")
    if deltas is not None:
        plots["deltas_plot"] = deltas
    for stale in ("stability.png", "deltas.png"):  # a re-render must not keep a plot of older data
        if (out_dir / stale) not in plots.values():
            (out_dir / stale).unlink(missing_ok=True)

    json_path = out_dir / "card.json"
    json_path.write_text(json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n", encoding="utf-8")
    md_path = out_dir / "card.md"
    md_path.write_text(_markdown(data, plots), encoding="utf-8")
    return {"json": json_path, "markdown": md_path, **plots}


__all__ = ["render_card"]
