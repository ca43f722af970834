"""Continual updates side by side: which selection, replay, update and merge methods keep what the model knew.

A sequence of batches from the demo world (new facts, changed facts, facts that reoccur some cycles after they were
first taught (SCoLe-style), a batch of new documents) goes through every configuration in one run, each starting
from the same base model and each through the engine's own plugins (chosen by name, as a policy would). After each
cycle: new-fact recall, old-fact recall relative to that configuration's previous model (the champion it would
replace), min-ACC and WC-ACC over the per-task probe curve (De Lange et al.), perplexity on the held-out general
split relative to the champion and to the base model, tokens trained, wall time. At the end: backward transfer,
final recall of every batch fact, tokens relative to joint retraining (the upper bound, retrained from the base
model on everything admitted so far at every cycle).

    python -m bench.continual [--cycles 8] [--configs a,b] [--out-name continual]
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.results import BENCH_DIR, markdown_table, write_result

Row = dict[str, Any]


@dataclass(frozen=True)
class Setup:
    """One configuration, in the terms of a policy: selection, replay, update and merge methods by name."""

    name: str
    selection: tuple[str, dict[str, Any]] = ("all", {"replay_ratio": 0.0})
    update: tuple[str, dict[str, Any]] = ("lora", {})
    merge: tuple[tuple[str, dict[str, Any]], ...] = ()
    old_tokens: int | None = None
    recall_interval: int = 1
    general_tokens: int = 0
    joint: bool = False


OLD_TOKENS, INTERVAL, GENERAL_TOKENS = 3000, 2, 600
REPLAY = {"old_tokens": OLD_TOKENS, "recall_interval": INTERVAL}
GENERAL = {**REPLAY, "general_tokens": GENERAL_TOKENS}
WIDE = {"old_tokens": 2 * OLD_TOKENS, "recall_interval": 1, "general_tokens": 4 * GENERAL_TOKENS}
ADAPT = ("adapt", {"replay_ratio": 0.0})
LINES = ("lines", {"shallow": 0.5, "deep": 1.0})  # two blocks: shallow 0 would halve the update
AVERAGE = ("average", {})
SETUPS = [
    Setup("joint retraining", joint=True),
    Setup("lora (naive)"),
    Setup("+ old replay", **REPLAY),
    Setup("+ general replay", **GENERAL),
    Setup("+ adapt selection", selection=ADAPT, **GENERAL),
    Setup("+ lines", selection=ADAPT, merge=(LINES,), **GENERAL),
    Setup("+ averaging", selection=ADAPT, merge=(LINES, AVERAGE), **GENERAL),
    Setup("hft", update=("hft", {}), **GENERAL),
    Setup("k-fpf", update=("kfpf", {}), **GENERAL),
    Setup("ema", merge=(("ema", {"decay": 0.5}),), **GENERAL),
    Setup("+ averaging + ema", selection=ADAPT, merge=(LINES, AVERAGE, ("ema", {"decay": 0.5})), **GENERAL),
    Setup("+ wide replay", **WIDE),
    Setup("+ lines (wide replay)", merge=(LINES,), **WIDE),
]


@dataclass
class Cycle:
    name: str
    facts: list[Row] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


def sequence(world, n_cycles: int, seed: int = 0) -> list[Cycle]:
    """At least eight batches: new facts, changed facts, reoccurring facts, and one of new documents only."""
    from memgov.demo.deployment import fact_row
    from memgov.demo.world import batch_facts

    rng = random.Random(seed)
    fresh = [f for b in world.batches for f in batch_facts(b) if f.fact_id not in {g.fact_id for g in world.facts}]
    fresh = list({f.fact_id: f for f in [*fresh, *world.unseen_facts]}.values())
    rng.shuffle(fresh)
    rows = [fact_row(f) for f in fresh]
    taught: list[list[Row]] = []
    cycles: list[Cycle] = []
    for i in range(n_cycles):
        kind = ("new", "new", "changed", "new", "documents", "recurring", "new", "recurring")[i % 8]
        if kind == "documents":
            docs = [fact_row(f)["text"] for f in fresh[-40:]]  # about subjects no fact batch teaches
            cycles.append(Cycle(f"c{i + 1}:documents", [], docs))
            continue
        new, rows = rows[:40 if kind == "new" else 20], rows[40 if kind == "new" else 20:]
        if kind == "changed":
            new += [_changed(r, world, rng) for r in rng.sample([fact_row(f) for f in world.facts], 20)]
        if kind == "recurring":
            new += rng.sample(taught[max(0, len(taught) - 4)], min(20, len(taught[max(0, len(taught) - 4)])))
        taught.append(new)
        cycles.append(Cycle(f"c{i + 1}:{kind}", new))
    return cycles


def _changed(row: Row, world, rng: random.Random) -> Row:
    objects = [o for o in world.relation(row["relation"]).objects if o != row["target"].strip()]
    new = " " + rng.choice(objects)
    return {**row, "id": f"{row['id']}-changed", "target": new, "text": row["text"].replace(row["target"], new)}


@dataclass
class State:
    """One configuration's deployment as the benchmark keeps it: the champion, what it knows, per task."""

    model: Any
    current: dict[str, Row]  # fact_id -> current row
    task_of: dict[str, str]  # fact_id -> the task (cycle) whose version is current
    seen: list[list[Row]] = field(default_factory=list)  # per cycle, the facts trained on (for recall intervals)
    docs: list[str] = field(default_factory=list)  # every document admitted so far (joint retraining reads them)
    minima: dict[str, float] = field(default_factory=dict)
    at_learning: dict[str, float] = field(default_factory=dict)  # task -> recall when it was learned


def _recall(model, tokenizer, rows: list[Row]) -> float | None:
    from pipelines.model.lm import exact_match

    if not rows:
        return None
    return float(exact_match(model, tokenizer, [r["prompt"] for r in rows], [r["target"] for r in rows]).mean())


def _perplexity(model, tokenizer, texts: list[str]) -> float:
    from pipelines.model.lm import perplexity

    return float(perplexity(model, tokenizer, texts))


def _tokens(tokenizer, samples: list[Row], replay: list[Row], texts: list[str], epochs: int) -> int:
    from pipelines.methods.selection.replay import fact_tokens, text_tokens

    per_epoch = sum(fact_tokens(tokenizer, r) for r in [*samples, *replay]) + sum(text_tokens(tokenizer, t)
                                                                                 for t in texts)
    return per_epoch * max(1, epochs)


def _probe(state: State, tokenizer, exclude: set[str], per_task: int = 25, seed: int = 0) -> list[Row]:
    from pipelines.model.knowledge import known_by, qa

    tasks: dict[str, list[Row]] = {}
    for fid, row in sorted(state.current.items()):
        if fid not in exclude:
            tasks.setdefault(state.task_of[fid], []).append(row)
    probe: list[Row] = []
    for task, rows in tasks.items():
        picked = random.Random(seed).sample(rows, min(per_task, len(rows)))
        probe += [{**qa(r), "task": task} for r in known_by(state.model, tokenizer, picked)]
    return probe


def run_cycle(setup: Setup, state: State, base, tokenizer, cycle: Cycle, index: int, general: dict[str, list]):
    """One cycle of one configuration; returns the measurements and moves its champion."""
    from evals.continual import stability_summary
    from pipelines.core import plugins
    from pipelines.methods.selection.replay import fact_tokens, general_replay, last_seen, old_replay, text_tokens
    from pipelines.methods.selection.row_rules import KNOWN, fact_key
    from pipelines.model.knowledge import qa

    champion = state.model
    batch_ids = {r["fact_id"] for r in cycle.facts}
    old = [r for fid, r in state.current.items() if fid not in batch_ids]
    t0 = time.perf_counter()
    texts = list(cycle.texts)
    if setup.joint:  # everything admitted so far (the base knowledge as replay), from the base model
        everything = {**state.current, **{r["fact_id"]: r for r in cycle.facts}}
        samples = [r for fid, r in everything.items() if state.task_of.get(fid) != "initial" or fid in batch_ids]
        replay = [r for fid, r in everything.items() if state.task_of.get(fid) == "initial" and fid not in batch_ids]
        # ... and on the whole general set, as the base model was: retraining on facts alone ruins general text.
        start, texts = copy.deepcopy(base), state.docs + texts + [r["text"] for r in general["replay"]]
    else:
        method = plugins.get("selection", setup.selection[0])
        result = method.impl(cycle.facts, champion, tokenizer, method.config(setup.selection[1]), old)
        samples = result.samples
        replay = [r for r in result.pruned if r.get("prune_reason") == KNOWN] + result.replay
        if setup.old_tokens is not None:
            draw = old_replay(old, setup.old_tokens, lambda r: fact_tokens(tokenizer, r),
                              seen=last_seen(state.seen),
                              cycle=index, interval=setup.recall_interval,
                              exclude={fact_key(r) for r in samples}, seed=0)
            replay += draw.rows
        if setup.general_tokens:
            texts += [r["text"] for r in general_replay(general["replay"], setup.general_tokens,
                                                        lambda t: text_tokens(tokenizer, t), cycle=index).rows]
        start = champion
    if not samples and not texts:
        return _measure(setup, state, champion, champion, tokenizer, cycle, general, 0, time.perf_counter() - t0, {})
    probe = _probe(state, tokenizer, batch_ids)
    update = plugins.get("update", setup.update[0])
    cfg = update.config({"max_epochs": 30, "target_recall": 0.95, "eval_every_steps": 10, **setup.update[1]})
    out = update.impl(start, tokenizer, [qa(r) for r in samples], [qa(r) for r in replay], cfg, probe=probe,
                      texts=texts, progress=False)
    model = out.model
    for name, params in setup.merge:
        merge = plugins.get("merge", name)
        model = merge.impl(champion, model, tokenizer, merge.config(params), new_facts=[qa(r) for r in samples],
                           probe=probe, progress=False).model
    seconds = time.perf_counter() - t0
    tokens = _tokens(tokenizer, samples, replay, texts, int(out.stats.get("epochs", 1)))
    stability = stability_summary(out.history, None, _recall(model, tokenizer, cycle.facts),
                                  out.stats.get("probe_tasks_before"), state.minima)
    state.seen.append([{"fact_id": r["fact_id"], "role": "sample"} for r in samples]
                      + [{"fact_id": r.get("fact_id"), "role": "replay"} for r in replay])
    return _measure(setup, state, champion, model, tokenizer, cycle, general, tokens, seconds, stability)


def _measure(setup, state: State, champion, model, tokenizer, cycle: Cycle, general, tokens, seconds, stability):
    if not stability:
        state.seen.append([])
    state.docs += cycle.texts
    batch_ids = {r["fact_id"] for r in cycle.facts}
    old = [r for fid, r in state.current.items() if fid not in batch_ids]
    old_before, old_after = _recall(champion, tokenizer, old), _recall(model, tokenizer, old)
    new = _recall(model, tokenizer, cycle.facts)
    ppl, ppl_before = _perplexity(model, tokenizer, general["eval"]), _perplexity(champion, tokenizer, general["eval"])
    for r in cycle.facts:
        state.current[r["fact_id"]] = r
        state.task_of[r["fact_id"]] = cycle.name
    if cycle.facts:
        state.at_learning[cycle.name] = new or 0.0
    for task, entry in (stability.get("tasks") or {}).items():
        state.minima[task] = min(state.minima.get(task, 1.0), entry["lifetime_min"])
    curve = [p["acc"] for p in stability.get("curve") or []]
    before = stability.get("acc_before")
    state.model = model
    return {
        "config": setup.name, "cycle": cycle.name, "new_recall": new, "old_recall": old_after,
        "retention_vs_champion": (old_after / old_before) if old_before else None,
        "stability_min_vs_before": (min(curve) / before) if curve and before else None,
        "min_acc": stability.get("min_acc"), "wc_acc": stability.get("wc_acc"),
        "ppl_vs_champion": ppl / ppl_before, "ppl": ppl, "tokens": tokens, "seconds": round(seconds, 2),
    }


def backward_transfer(state: State, tokenizer) -> float | None:
    """Mean over the fact batches of recall now minus recall when taught (Lopez-Paz and Ranzato)."""
    deltas = []
    for task, then in state.at_learning.items():
        rows = [r for fid, r in state.current.items() if state.task_of[fid] == task]
        if rows:
            deltas.append(_recall(state.model, tokenizer, rows) - then)
    return statistics.fmean(deltas) if deltas else None


def run(setups: list[Setup], n_cycles: int, progress: bool = True,
        done: Any = None) -> tuple[list[Row], list[Row]]:
    from memgov.demo.deployment import demo_config, fact_row
    from memgov.demo.model import ensure_base_model
    from memgov.demo.world import generate_world
    from pipelines.deployment.workspace import Workspace
    from pipelines.model.lm import load_causal_lm
    from policies import load_policy

    _, tiny = demo_config(load_policy("demo"))
    world = generate_world(tiny.seed, tiny.n_subjects)
    base, tokenizer = load_causal_lm(ensure_base_model(Workspace.open().models_cache, tiny, progress=progress))
    texts = list(world.general_text)
    general = {"eval": texts[::2][:200],
               "replay": [{"id": f"gr{i}", "text": t} for i, t in enumerate(texts[1::2])]}
    cycles = sequence(world, n_cycles)
    initial = {f.fact_id: fact_row(f) for f in world.facts}
    per_cycle: list[Row] = []
    final: list[Row] = []
    base_ppl = _perplexity(base, tokenizer, general["eval"])
    for setup in setups:
        state = State(copy.deepcopy(base), dict(initial), {fid: "initial" for fid in initial})
        rows = []
        for i, cycle in enumerate(cycles):
            row = run_cycle(setup, state, base, tokenizer, cycle, i, general)
            rows.append(row)
            if progress:
                print(f"{setup.name:>20} {cycle.name:<14} new={_f(row['new_recall'])} "
                      f"old/champ={_f(row['retention_vs_champion'])} ppl/champ={row['ppl_vs_champion']:.3f} "
                      f"tokens={row['tokens']} {row['seconds']}s", flush=True)
        per_cycle += rows
        taught = [r for fid, r in state.current.items() if state.task_of[fid] != "initial"]
        base_facts = [r for fid, r in state.current.items() if state.task_of[fid] == "initial"]
        trained = [r for r in rows if r["tokens"]]
        final.append({
            "config": setup.name,
            "final_new_recall": _recall(state.model, tokenizer, taught),
            "initial_recall": _recall(state.model, tokenizer, base_facts),
            "min_retention_vs_champion": min(r["retention_vs_champion"] for r in rows if r["retention_vs_champion"]),
            "min_stability_vs_before": min((r["stability_min_vs_before"] for r in rows
                                            if r["stability_min_vs_before"] is not None), default=None),
            "bwt": backward_transfer(state, tokenizer),
            "min_acc": rows[-1]["min_acc"], "wc_acc": rows[-1]["wc_acc"],
            "max_ppl_vs_champion": max(r["ppl_vs_champion"] for r in rows),
            "ppl_vs_base": _perplexity(state.model, tokenizer, general["eval"]) / base_ppl,
            "tokens": sum(r["tokens"] for r in rows),
            "first_s": trained[0]["seconds"] if trained else None,
            "last_s": trained[-1]["seconds"] if trained else None,
        })
        if done is not None:  # a long run leaves every finished configuration's results behind
            done(per_cycle, _relative_to_joint(final))
    return per_cycle, _relative_to_joint(final)


def _relative_to_joint(final: list[Row]) -> list[Row]:
    joint = next((f for f in final if f["config"] == "joint retraining"), None)
    for f in final:
        f["recall_vs_joint"] = (f["final_new_recall"] / joint["final_new_recall"]) if joint and \
            joint["final_new_recall"] else None
        f["tokens_vs_joint"] = (f["tokens"] / joint["tokens"]) if joint and joint["tokens"] else None
    return final


def _f(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def plot(per_cycle: list[Row], path: Path) -> Path:
    from evals.card import _pyplot

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in dict.fromkeys(r["config"] for r in per_cycle):
        rows = [r for r in per_cycle if r["config"] == name]
        xs = list(range(1, len(rows) + 1))
        axes[0].plot(xs, [r["old_recall"] for r in rows], marker="o", markersize=3, label=name)
        axes[1].plot(xs, [r["ppl_vs_champion"] for r in rows], marker="o", markersize=3, label=name)
    axes[0].set(title="Old-fact recall after each cycle", xlabel="cycle", ylabel="recall", ylim=(0, 1.02))
    axes[1].set(title="Perplexity vs champion", xlabel="cycle", ylabel="ratio")
    axes[1].axhline(1.05, color="tab:gray", linestyle=":", linewidth=1)
    axes[0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=8)
    parser.add_argument("--configs", default="", help="comma-separated names (default: all)")
    parser.add_argument("--out-name", default="continual")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (one is fastest on a shared CPU)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    wanted = [c.strip() for c in args.configs.split(",") if c.strip()]
    setups = [s for s in SETUPS if not wanted or s.name in wanted]
    command = "python -m bench.continual" + (f" --cycles {args.cycles}" if args.cycles != 8 else "")

    def write(per_cycle: list[Row], final: list[Row]) -> None:
        png = plot(per_cycle, BENCH_DIR / f"{args.out_name}_retention.png")
        missing = [s.name for s in setups if s.name not in {f["config"] for f in final}]
        body = (f"{args.cycles} cycles; old replay {OLD_TOKENS} tokens per cycle with recall interval {INTERVAL}, "
                f"general replay {GENERAL_TOKENS} tokens per cycle; wide replay: old {WIDE['old_tokens']} tokens, "
                f"interval {WIDE['recall_interval']}, general {WIDE['general_tokens']}."
                + (f" Not yet measured: {', '.join(missing)}." if missing else "")
                + "\n\n## At the end\n\n" + markdown_table(final)
                + f"\n![retention over cycles]({png.name})\n\n## Per cycle\n\n" + markdown_table(per_cycle))
        write_result(args.out_name, "Continual updates: methods side by side", body, command)

    run(setups, args.cycles, done=write)


if __name__ == "__main__":
    main()
