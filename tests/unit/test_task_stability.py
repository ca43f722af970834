"""The probe curve covers each earlier task on its own (k > 2), and min-ACC reaches back to when a task was learned."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from support_checkpoints import write_checkpoint

from evals.continual import lifetime_minima, stability_summary
from pipelines.methods.update.lora import LoraUpdateConfig, train_lora
from pipelines.model.lm import load_causal_lm


def _history(*points: dict[str, float]) -> list[dict]:
    return [{"step": i + 1, "probe_acc": sum(p.values()) / len(p), "new_acc": 0.5, "probe_tasks": p}
            for i, p in enumerate(points)]


def test_each_task_is_its_own_curve_and_k_counts_them_all():
    history = _history({"initial": 1.0, "b1": 0.9, "b2": 0.8}, {"initial": 0.6, "b1": 0.9, "b2": 0.4},
                       {"initial": 0.9, "b1": 1.0, "b2": 0.7})
    out = stability_summary(history, 0.9, 1.0, tasks_before={"initial": 1.0, "b1": 1.0, "b2": 0.8})
    assert out["n_tasks"] == 4
    assert out["min_acc"] == pytest.approx((0.6 + 0.9 + 0.4) / 3), "each task's own minimum, averaged"
    assert out["wc_acc"] == pytest.approx(1.0 / 4 + 3 / 4 * out["min_acc"])
    assert out["stability_gap"] == pytest.approx((0.4 + 0.1 + 0.4) / 3)
    assert out["tasks"]["b2"] == {"before": 0.8, "min": 0.4, "lifetime_min": 0.4, "final": 0.7}
    assert out["curve"][1]["tasks"]["b2"] == 0.4, "the card's curve keeps the per-task points for its plot"


def test_a_merged_probe_would_hide_what_one_task_lost():
    history = _history({"initial": 1.0, "b1": 0.2}, {"initial": 1.0, "b1": 0.3})
    out = stability_summary(history, 1.0, 1.0, tasks_before={"initial": 1.0, "b1": 1.0})
    assert out["tasks"]["b1"]["min"] == pytest.approx(0.2)
    assert out["min_acc"] == pytest.approx(0.6) and out["stability_gap"] == pytest.approx(0.4)


def test_min_acc_takes_the_lowest_point_since_the_task_was_learned_from_earlier_cards():
    earlier = [{"stability": {"tasks": {"b1": {"min": 0.5, "lifetime_min": 0.5}}}},
               {"stability": {"tasks": {"b1": {"min": 0.7}, "initial": {"min": 0.8}}}}, {}]
    minima = lifetime_minima(earlier)
    assert minima == {"b1": 0.5, "initial": 0.8}
    history = _history({"initial": 0.9, "b1": 0.9, "b2": 1.0})
    out = stability_summary(history, 1.0, 1.0, tasks_before={"initial": 1.0, "b1": 1.0, "b2": 1.0},
                            earlier_minima=minima)
    assert out["tasks"]["b1"]["lifetime_min"] == 0.5 and out["tasks"]["b1"]["min"] == 0.9
    assert out["min_acc"] == pytest.approx((0.8 + 0.5 + 1.0) / 3)
    assert out["stability_gap"] == pytest.approx((0.1 + 0.1 + 0.0) / 3), "the gap is this update's own drop"


def test_without_task_tags_the_merged_probe_is_reported_as_before():
    out = stability_summary([{"step": 1, "probe_acc": 0.7}], 0.9, 1.0)
    assert "tasks" not in out and out["min_acc"] == pytest.approx(0.7)


def test_the_trainer_scores_each_task_at_every_probe_point():
    with tempfile.TemporaryDirectory() as tmp:
        model, tokenizer = load_causal_lm(write_checkpoint(Path(tmp) / "m", "gpt2"))
    new = [{"prompt": f"The code of box {i} is", "target": f" {i % 7}"} for i in range(6)]
    probe = [{"prompt": f"The colour of door {i} is", "target": " red", "task": "initial" if i < 3 else "b1"}
             for i in range(6)]
    cfg = LoraUpdateConfig(max_epochs=2, eval_every_steps=1, batch_size=4)
    result = train_lora(model, tokenizer, new, [], cfg, probe=probe, progress=False)
    assert result.history and all(set(p["probe_tasks"]) == {"initial", "b1"} for p in result.history)
    assert set(result.stats["probe_tasks_before"]) == {"initial", "b1"}
    for point in result.history:
        assert point["probe_acc"] == pytest.approx(sum(point["probe_tasks"].values()) / 2)
