"""Metric modules (their documented examples run as doctests), suites, backward transfer and cards."""

from __future__ import annotations

import doctest
import json
import math
import os
from collections import namedtuple
from pathlib import Path

import pytest

import evals.metrics as metrics_pkg
from evals.card import render_card
from evals.continual import backward_transfer, stability_metrics
from evals.gates import Gate, decide
from evals.metrics import available_metrics, load_metric
from evals.names import SUITE_METRICS
from evals.suites import EvalSets, run_suites

Hit = namedtuple("Hit", "doc_id score text")


@pytest.fixture(scope="module", autouse=True)
def memgov_home(tmp_path_factory):
    """Keep the module cache of this test module in a temporary MEMGOV_HOME."""
    home = tmp_path_factory.mktemp("memgov_home")
    old = os.environ.get("MEMGOV_HOME")
    os.environ["MEMGOV_HOME"] = str(home)
    metrics_pkg._CACHE.clear()
    yield home
    metrics_pkg._CACHE.clear()
    if old is None:
        os.environ.pop("MEMGOV_HOME", None)
    else:
        os.environ["MEMGOV_HOME"] = old


# ---------------------------------------------------------------- metric modules


METRIC_MODULES = ["fact_recall", "log_likelihood", "retrieval_support", "stability", "membership_inference",
                  "forget_quality", "token_f1"]


def test_every_metric_module_ships():
    assert set(METRIC_MODULES) <= set(available_metrics())


@pytest.mark.parametrize("name", METRIC_MODULES)
def test_metric_description_examples_run(name):
    metric = load_metric(name)
    test = doctest.DocTestParser().get_doctest(metric.info.description, {}, name, None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted >= 2 and result.failed == 0


def test_modules_load_offline_into_memgov_home(memgov_home):
    load_metric("fact_recall")
    assert os.environ["HF_EVALUATE_OFFLINE"] == "1" and os.environ["HF_HUB_OFFLINE"] == "1"
    # The folder is fixed at the process's first load (an earlier test may have opened another home first).
    modules = Path(os.environ["HF_MODULES_CACHE"])
    assert modules.name == "hf_modules" and not modules.is_relative_to(Path.home() / ".cache")
    assert any(modules.rglob("fact_recall.py"))
    assert load_metric("fact_recall") is load_metric("fact_recall")
    with pytest.raises(ValueError, match="available: fact_recall"):
        load_metric("accuracy")


def test_metric_edge_cases():
    assert load_metric("fact_recall").compute(predictions=["a b"], references=["a  c"]) == {"recall": 0.0, "n": 1.0}
    with pytest.raises(ValueError, match="n_tokens"):
        load_metric("log_likelihood").compute(predictions=[-1.0, -2.0], n_tokens=[1])
    support = load_metric("retrieval_support")
    assert support.compute(predictions=["born in Tessa mir"], references=["tessa   MIR"])["support_rate"] == 1.0
    assert support.compute(predictions=["Tessamirian"], references=["Tessamir"])["support_rate"] == 0.0
    stab = load_metric("stability")
    two = stab.compute(curve=[[0.9, 0.5, 0.9], [1.0, 1.0]], acc_before=[1.0, 0.8], current_acc=0.9)
    assert two["min_acc"] == pytest.approx(0.75)  # (0.5 + 1.0) / 2
    assert two["stability_gap"] == pytest.approx(0.25)  # (0.5 + max(0, 0.8 - 1.0)) / 2
    assert two["wc_acc"] == pytest.approx(0.9 / 3 + (2 / 3) * 0.75)  # k = 3
    assert two["final_acc"] == pytest.approx(0.95)
    k5 = stab.compute(curve=[[0.5]], acc_before=[0.5], current_acc=1.0, n_tasks=5)
    assert k5["wc_acc"] == pytest.approx(0.2 + 0.8 * 0.5)
    with pytest.raises(ValueError, match="n_tasks"):
        stab.compute(curve=[[0.5]], acc_before=[0.5], n_tasks=1)
    assert stability_metrics([0.7, 0.4, 0.8], 0.9, 1.0)["stability_gap"] == pytest.approx(0.5)


# ---------------------------------------------------------------- suites on a tiny model

KNOWN = [{"id": f"k{i}", "prompt": f"Home town of person{i}", "target": f"city{i}"} for i in range(6)]
UNKNOWN = [{"id": f"u{i}", "prompt": f"Home town of person{i}", "target": f"city{i}"} for i in range(6, 9)]


@pytest.fixture(scope="module")
def lm():
    from support_wordlm import word_lm

    return word_lm(KNOWN, [f"{r['prompt']} {r['target']}" for r in KNOWN + UNKNOWN])


class FakeIndex:
    """Duck-typed index: returns the documents whose key occurs in the query."""

    def __init__(self, docs: dict[str, str]):
        self.docs = docs
        self.calls = []

    def search(self, queries, embedder, k):
        self.calls.append((list(queries), embedder, k))
        return [[Hit(d, 1.0, t) for d, t in self.docs.items() if d in q][:k] for q in queries]


def test_run_suites_metrics(lm):
    from pipelines.model.lm import perplexity, score_qa

    model, tokenizer = lm
    general = ["person1 lives in city1 .", "person2 lives in city2 . Where does person3 live ?"]
    sets = EvalSets(
        new_facts=KNOWN[:4],
        paraphrases=[],
        retention=KNOWN[4:] + UNKNOWN[:2],
        forget=UNKNOWN,
        locality=KNOWN,
        general_text=general,
        rag_queries=[
            {"id": "q1", "prompt": "Where does person1 live ?", "target": "city1"},
            {"id": "q2", "prompt": "Where does person2 live ?", "target": "city2"},
        ],
    )
    index = FakeIndex({"person1": "person1 lives in city1 .", "person2": "person2 moved away ."})
    res = run_suites(model, tokenizer, sets, index=index, embedder="emb", rag_k=2)
    m = res.metrics
    assert list(m) == list(SUITE_METRICS)
    assert m["new_fact_recall"] == 1.0
    assert m["paraphrase_recall"] is None  # empty set: not measured, not zero
    assert m["retention"] == pytest.approx(0.5)
    assert res.details["retention"]["missed"] == ["u6", "u7"]
    assert m["locality"] == 1.0
    assert m["forget_recall"] == 0.0
    expected_ll = float(score_qa(model, tokenizer, [r["prompt"] for r in UNKNOWN], [r["target"] for r in UNKNOWN])
                        .mean_logprob.mean())
    assert m["forget_log_likelihood"] == pytest.approx(expected_ll, rel=1e-5)
    assert m["perplexity"] == pytest.approx(perplexity(model, tokenizer, general), rel=1e-4)
    assert m["rag_support"] == 0.5
    assert res.details["rag"]["unsupported"] == ["q2"]
    assert index.calls == [(["Where does person1 live ?", "Where does person2 live ?"], "emb", 2)]


def test_run_suites_empty_sets_and_no_index(lm):
    model, tokenizer = lm
    res = run_suites(model, tokenizer, EvalSets(new_facts=KNOWN[:1], rag_queries=KNOWN[:1]))
    assert res.metrics["new_fact_recall"] == 1.0
    assert all(res.metrics[k] is None for k in SUITE_METRICS if k != "new_fact_recall")
    assert res.details["rag"]["skipped"] == "no index"


def test_eval_sets_reject_bad_rows():
    with pytest.raises(ValueError, match=r"EvalSets.forget\[1\]"):
        EvalSets(forget=[KNOWN[0], {"prompt": "x"}])
    with pytest.raises(ValueError, match="general_text"):
        EvalSets(general_text=[""])


def test_backward_transfer():
    history = [
        {"release_id": "r1", "acc_at_release": 1.0, "acc_now": 0.8},
        {"release_id": "r2", "acc_at_release": 0.9, "acc_now": 1.0},
        {"release_id": "r3", "acc_at_release": None, "acc_now": 0.5},
    ]
    assert backward_transfer(history) == pytest.approx((-0.2 + 0.1) / 2)
    assert backward_transfer([]) is None
    assert backward_transfer(history[2:]) is None
    with pytest.raises(ValueError, match="acc_now"):
        backward_transfer([{"acc_at_release": 1.0}])


# ---------------------------------------------------------------- cards


def _card(curve, champion):
    metrics = {"new_fact_recall": 0.95, "retention": 0.97, "perplexity": 11.0, "rag_support": None}
    decision = decide(metrics, [Gate(metric="retention", min_delta_vs_champion=-0.01),
                                Gate(metric="perplexity", max_ratio_vs_champion=1.25)], champion)
    return {
        "release_id": "rel-0002",
        "cycle": "cycle-2",
        "created_at": "2025-01-01T00:00:00Z",
        "versions": {"data": "sha256:aa", "model": "sha256:bb", "policy": "v3", "code": "0.1.0"},
        "metrics": metrics,
        "champion_metrics": champion,
        "decision": decision,
        "stability": {"curve": curve, "acc_before": 0.98, "min_acc": 0.6, "wc_acc": 0.8, "stability_gap": math.nan},
        "notes": ["first note"],
    }


def test_render_full_card(tmp_path):
    champion = {"new_fact_recall": 0.2, "retention": 0.99, "perplexity": 10.0, "rag_support": 0.9}
    card = _card([0.98, 0.6, {"step": 4, "acc": 0.9}], champion)
    paths = render_card(card, tmp_path)
    assert set(paths) == {"json", "markdown", "stability_plot", "deltas_plot"}
    for key in ("stability_plot", "deltas_plot"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads(paths["json"].read_text())
    assert data["decision"]["passed"] is False  # retention 0.97 < 0.99 - 0.01
    assert data["stability"]["stability_gap"] is None  # NaN is not valid JSON
    md = paths["markdown"].read_text()
    assert "| retention | 0.97 | 0.99 | -0.02 ▼ |" in md
    assert "| perplexity | 11 | 10 | +1 ▼ |" in md
    assert ">= champion - 0.01 (0.98)" in md and "FAIL" in md
    assert "`sha256:aa`" in md and "| min_acc | 0.6 |" in md
    assert "![Stability during training](stability.png)" in md and "- first note" in md


def test_the_ui_card_names_the_release_and_carries_its_plots(tmp_path):
    import base64
    import re

    from evals.card import card_markdown_for_ui

    render_card(_card([0.98, 0.6, 0.9], {"retention": 0.99, "perplexity": 10.0}), tmp_path)
    md = card_markdown_for_ui(tmp_path, "r0007")
    assert md.startswith("# Evaluation card — r0007, rel-0002")
    images = re.findall(r"!\[([^\]]+)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", md)
    assert [alt for alt, _ in images] == ["Stability during training", "Metric deltas vs champion"]
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for _, data in images)
    assert "](stability.png)" not in md, "a relative link resolves against the UI's pages, not the card"


def test_render_card_without_curve_or_champion(tmp_path):
    render_card(_card([0.9, 0.5], {"retention": 0.9}), tmp_path)
    assert (tmp_path / "stability.png").exists()
    paths = render_card(_card([], None), tmp_path)
    assert set(paths) == {"json", "markdown"}
    assert not (tmp_path / "stability.png").exists() and not (tmp_path / "deltas.png").exists()
    assert "Gates: **PASSED**" in paths["markdown"].read_text()


def test_stability_summary_from_trainer_history(tmp_path):
    from evals.continual import stability_summary

    history = [
        {"step": 5, "loss": 2.0, "new_acc": 0.2, "probe_acc": 0.9},
        {"step": 10, "loss": 1.0, "new_acc": 0.6, "probe_acc": 0.5},
        {"step": 15, "loss": 0.5, "new_acc": 0.9, "probe_acc": 0.8},
    ]
    out = stability_summary(history, acc_before=1.0, current_acc=0.9)
    assert out["n_points"] == 3 and out["curve"][1] == {"step": 10.0, "acc": 0.5, "new_acc": 0.6}
    assert out["min_acc"] == 0.5 and out["final_acc"] == 0.8
    assert out["stability_gap"] == pytest.approx(0.5)
    assert out["wc_acc"] == pytest.approx(0.9 / 2 + 0.5 / 2)
    assert stability_summary(history, None, None)["stability_gap"] == pytest.approx(0.4)  # first point stands in
    empty = stability_summary([{"step": 1, "new_acc": 1.0, "probe_acc": None}], 0.9, 1.0)
    assert empty["curve"] == [] and empty["min_acc"] is None and empty["stability_gap"] is None
    card = _card(out["curve"], None)
    card["stability"] = out
    paths = render_card(card, tmp_path)
    assert "stability_plot" in paths and "| min_acc | 0.5 |" in paths["markdown"].read_text()
