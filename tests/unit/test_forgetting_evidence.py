"""The numbers behind a verified forget request: calibration to the never-seen level, membership inference,
forget quality, the representation probe, and the checks that turn them into `verified` or `failed`."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from evals.suites import COMPARISON_REFERENCE, COMPARISON_UNSEEN, EvalSets, run_suites
from memgov.demo.model import BaseModelConfig, ensure_base_model, load_base_model
from memgov.demo.world import generate_world, qas
from pipelines.core import plugins
from pipelines.forget.verify import request_checks, request_verdicts
from pipelines.model.lm import score_qa
from policies import load_policy, merge_overrides

BASE = BaseModelConfig(n_subjects=40, n_embd=64, paraphrases_in_training=[0], general_text=False, target_recall=1.01,
                       max_epochs=150)
POLICY = load_policy("default")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = ensure_base_model(tmp_path_factory.mktemp("base"), BASE, progress=False)
    model, tokenizer = load_base_model(path, torch.device("cpu"))
    world = generate_world(BASE.seed, BASE.n_subjects)
    facts = qas(world.facts)
    forget_subjects = {f.subject_id for f in world.facts[:10]}
    forget = [q for f, q in zip(world.facts, facts, strict=True) if f.subject_id in forget_subjects]
    retain = [q for f, q in zip(world.facts, facts, strict=True) if f.subject_id not in forget_subjects]
    return SimpleNamespace(model=model, tokenizer=tokenizer, forget=forget, retain=retain,
                           unseen=qas(world.unseen_facts))


def _ll(model, tokenizer, rows) -> np.ndarray:
    return score_qa(model, tokenizer, [q["prompt"] for q in rows], [q["target"] for q in rows]).mean_logprob


def test_calibration_stops_forgetting_near_the_never_seen_level(tiny):
    floor = float(_ll(tiny.model, tiny.tokenizer, tiny.unseen).mean())
    method = plugins.get("unlearn", "npo")
    plain = method.impl(tiny.model, tiny.tokenizer, tiny.forget, tiny.retain, method.config({}), progress=False)
    calibrated = method.impl(tiny.model, tiny.tokenizer, tiny.forget, tiny.retain,
                             method.config({"floor_logprob": floor}), progress=False)
    for result in (plain, calibrated):
        assert result.stats["forget_recall_after"] == 0.0
    gap_plain = abs(float(_ll(plain.model, tiny.tokenizer, tiny.forget).mean()) - floor)
    gap_calibrated = abs(float(_ll(calibrated.model, tiny.tokenizer, tiny.forget).mean()) - floor)
    assert gap_calibrated < gap_plain, "calibration must bring the forget set closer to the never-seen level"


def _sets(tiny) -> EvalSets:
    return EvalSets(forget=tiny.forget, retention=tiny.retain[:40], unseen=tiny.unseen, probe_train=tiny.retain)


def test_a_model_that_still_knows_the_forget_set_is_caught(tiny):
    results = run_suites(tiny.model, tiny.tokenizer, _sets(tiny))
    m = results.metrics
    assert m["forget_recall"] > 0.9
    assert m["forget_mia_auc"] > 0.9, "members are far more likely than never-seen facts"
    assert m["forget_quality"] < 0.01 and results.details["forgetting"]["forget_quality"]["comparison"] == COMPARISON_UNSEEN
    assert m["forget_probe_excess"] is not None
    checks = request_checks(POLICY, m, {"index_clean": True})
    assert not checks["forget_recall"] and not checks["membership_inference"] and not checks["forget_quality"]


def test_the_probe_reads_known_answers_better_than_never_seen_ones(tiny):
    # Ten forgotten facts are too few to tell one lucky read from residual knowledge (0 or 2 of 10 right, depending
    # on the thread count the model was trained with): score facts the model knows but the probe was not fit on.
    from evals.probe import linear_probe

    half = len(tiny.retain) // 2
    probe = linear_probe(tiny.model, tiny.tokenizer, tiny.retain[:half], tiny.retain[half:] + tiny.forget, tiny.unseen)
    assert probe.n_forget > 100 and probe.excess > 0.1 and probe.p_value < 0.05, probe.as_dict()


def test_forget_quality_uses_the_retrained_reference_when_given(tiny):
    # The reference's view relative to its own never-seen level; here the same model, so KS cannot tell them apart.
    level = float(_ll(tiny.model, tiny.tokenizer, tiny.unseen).mean())
    reference = list(_ll(tiny.model, tiny.tokenizer, tiny.forget) - level)
    results = run_suites(tiny.model, tiny.tokenizer, _sets(tiny), reference_forget_ll=reference)
    detail = results.details["forgetting"]["forget_quality"]
    assert detail["comparison"] == COMPARISON_REFERENCE and results.metrics["forget_quality"] == pytest.approx(1.0)
    assert detail["p_value_vs_unseen"] < 0.01


def test_no_forget_set_measures_nothing(tiny):
    m = run_suites(tiny.model, tiny.tokenizer, EvalSets(retention=tiny.retain[:10])).metrics
    assert m["forget_quality"] is m["forget_mia_auc"] is m["forget_probe_excess"] is None


GOOD = {"forget_recall": 0.0, "forget_quality": 0.4, "forget_mia_auc": 0.55, "forget_probe_excess": 0.0,
        "retention": 0.95}


@pytest.mark.parametrize("metric, value, check", [
    ("forget_recall", 0.2, "forget_recall"),
    ("forget_quality", 0.01, "forget_quality"),
    ("forget_mia_auc", 0.9, "membership_inference"),
    ("forget_mia_auc", 0.1, "membership_inference"),  # over-forgetting is a tell too
    ("forget_probe_excess", 0.5, "representation_probe"),
    ("retention", 0.5, "retain_recall"),
    ("forget_quality", None, "forget_quality"),  # not measured never passes
])
def test_each_check_fails_on_its_own(metric, value, check):
    checks = request_checks(POLICY, {**GOOD, metric: value}, {"index_clean": True})
    assert [k for k, ok in checks.items() if not ok] == [check]


@pytest.mark.parametrize("forget_hits, unseen_hits, holds", [
    (1, 1, True),   # one lucky read of five: excess 0.18, p = 0.15, not evidence of residual knowledge
    (2, 1, False),  # two of five: p = 0.014
    (5, 0, False),
    (0, 3, True),
])
def test_the_probe_check_fails_on_a_significant_excess_only(forget_hits, unseen_hits, holds):
    from evals.probe import ProbeResult

    probe = ProbeResult(forget_accuracy=forget_hits / 5, unseen_accuracy=unseen_hits / 60, train_accuracy=0.8,
                        n_train=500, n_candidates=60, n_forget=5, n_unseen=60)
    metrics = {**GOOD, "forget_probe_excess": probe.excess, "forget_probe_p": probe.p_value}
    assert request_checks(POLICY, metrics, {"index_clean": True})["representation_probe"] is holds
    assert request_checks(POLICY, {**metrics, "forget_probe_p": None}, {"index_clean": True})[
        "representation_probe"] is (probe.excess <= POLICY.unlearning.max_probe_excess), "without a p-value: the bound"


def test_more_hits_p_is_the_hypergeometric_tail():
    from evals.probe import more_hits_p

    assert more_hits_p(1, 5, 1, 60) == pytest.approx(1 - (60 * 59) / (65 * 64))
    assert more_hits_p(0, 5, 4, 60) == 1.0 and more_hits_p(3, 3, 0, 3) == pytest.approx(1 / 20)


def test_request_verdicts_block_the_candidate_and_name_the_bound():
    loose = merge_overrides(POLICY, {"unlearning": {"max_mia_auc_gap": 0.45}}, "loose.yaml")
    checks, verdicts = request_verdicts(loose, {**GOOD, "forget_mia_auc": 0.9}, {"req-1": {"index_clean": False}})
    assert checks["req-1"]["membership_inference"] and not checks["req-1"]["index_clean"]
    (v,) = verdicts
    assert v["metric"] == "forget_request:req-1" and not v["passed"] and "index_clean" in v["reason"]
