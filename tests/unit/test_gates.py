"""Gates: validation messages and every branch of decide()."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from evals.gates import Decision, Gate, decide


def _one(metrics, gate, champion=None):
    decision = decide(metrics, [gate], champion)
    assert isinstance(decision, Decision) and len(decision.verdicts) == 1
    return decision, decision.verdicts[0]


def test_unknown_metric_lists_known_names():
    with pytest.raises(ValidationError) as err:
        Gate(metric="recall", min=0.5)
    text = str(err.value)
    assert "unknown metric 'recall'" in text and "new_fact_recall" in text and "perplexity" in text


def test_gate_needs_a_threshold_and_forbids_extra_keys():
    with pytest.raises(ValidationError, match="sets no threshold"):
        Gate(metric="retention")
    with pytest.raises(ValidationError, match="extra"):
        Gate(metric="retention", min=0.9, minimum=0.9)
    with pytest.raises(ValidationError, match="greater than max"):
        Gate(metric="retention", min=0.9, max=0.5)
    with pytest.raises(ValidationError, match="must be > 0"):
        Gate(metric="perplexity", max_ratio_vs_champion=0)


@pytest.mark.parametrize(
    ("gate", "value", "passed", "threshold"),
    [
        (Gate(metric="new_fact_recall", min=0.9), 0.95, True, ">= 0.9"),
        (Gate(metric="new_fact_recall", min=0.9), 0.85, False, ">= 0.9"),
        (Gate(metric="forget_recall", max=0.05), 0.0, True, "<= 0.05"),
        (Gate(metric="forget_recall", max=0.05), 0.2, False, "<= 0.05"),
        (Gate(metric="new_fact_recall", min=0.9), 0.9, True, ">= 0.9"),  # bounds are inclusive
    ],
)
def test_absolute_bounds(gate, value, passed, threshold):
    decision, v = _one({gate.metric: value}, gate)
    assert v.passed is passed and decision.passed is passed
    assert v.threshold == threshold
    assert v.value == value
    if not passed:
        assert "is not" in v.reason


def test_min_delta_vs_champion():
    gate = Gate(metric="retention", min_delta_vs_champion=-0.01)
    _, ok = _one({"retention": 0.935}, gate, {"retention": 0.94})
    assert ok.passed and ok.threshold == ">= champion - 0.01 (0.93)" and ok.champion_value == 0.94
    _, bad = _one({"retention": 0.92}, gate, {"retention": 0.94})
    assert not bad.passed and "0.92 is not >= champion - 0.01 (0.93)" in bad.reason


def test_max_delta_vs_champion():
    gate = Gate(metric="forget_recall", max_delta_vs_champion=0.0)
    assert _one({"forget_recall": 0.1}, gate, {"forget_recall": 0.1})[1].passed
    _, bad = _one({"forget_recall": 0.2}, gate, {"forget_recall": 0.1})
    assert not bad.passed and bad.threshold == "<= champion + 0 (0.1)"


def test_max_ratio_vs_champion():
    gate = Gate(metric="perplexity", max_ratio_vs_champion=1.25)
    _, ok = _one({"perplexity": 12.0}, gate, {"perplexity": 10.0})
    assert ok.passed and ok.threshold == "<= champion x 1.25 (12.5)"
    decision, bad = _one({"perplexity": 13.0}, gate, {"perplexity": 10.0})
    assert not bad.passed and not decision.passed


def test_ratio_gate_with_non_positive_champion_fails_safe():
    _, v = _one({"perplexity": 1.0}, Gate(metric="perplexity", max_ratio_vs_champion=1.25), {"perplexity": 0.0})
    assert not v.passed and "positive champion value" in v.reason


def test_none_value_is_not_applicable():
    decision, v = _one({"rag_support": None}, Gate(metric="rag_support", min=0.8), {"rag_support": 0.9})
    assert v.passed and decision.passed and v.reason == "not applicable (empty set)"


def test_relative_gate_without_champion_is_skipped():
    decision, v = _one({"retention": 0.1}, Gate(metric="retention", min_delta_vs_champion=-0.01), None)
    assert v.passed and decision.passed and "no champion to compare" in v.reason
    assert v.threshold == ">= champion - 0.01"


def test_absolute_part_still_applies_without_champion():
    gate = Gate(metric="retention", min=0.9, min_delta_vs_champion=-0.01)
    _, ok = _one({"retention": 0.95}, gate, None)
    assert ok.passed and "relative check skipped: no champion to compare" in ok.reason
    _, bad = _one({"retention": 0.5}, gate, None)
    assert not bad.passed


def test_champion_without_value_for_metric_is_skipped():
    _, v = _one({"rag_support": 0.7}, Gate(metric="rag_support", min_delta_vs_champion=0.0), {"retention": 0.9})
    assert v.passed and v.champion_value is None and "champion has no value" in v.reason


def test_both_bounds_must_hold():
    gate = Gate(metric="perplexity", max=20.0, max_ratio_vs_champion=1.1)
    _, v = _one({"perplexity": 15.0}, gate, {"perplexity": 10.0})
    assert not v.passed and "champion x 1.1" in v.reason and v.threshold == "<= 20 and <= champion x 1.1 (11)"


def test_missing_metric_and_nan_fail():
    _, missing = _one({}, Gate(metric="locality", min=0.9))
    assert not missing.passed and "missing" in missing.reason
    _, nan = _one({"locality": math.nan}, Gate(metric="locality", min=0.9))
    assert not nan.passed and "NaN" in nan.reason


def test_advisory_gate_failure_does_not_block():
    gates = [Gate(metric="locality", min=0.99, required=False), {"metric": "retention", "min": 0.9}]
    decision = decide({"locality": 0.5, "retention": 0.95}, gates, None)
    assert decision.passed
    assert [v.passed for v in decision.verdicts] == [False, True]
    assert decision.verdicts[0].required is False
    assert decision.summary().endswith("(advisory)")
    blocked = decide({"locality": 0.5, "retention": 0.5}, gates, None)
    assert not blocked.passed and "retention" in blocked.summary()


def test_decision_round_trips_as_dict():
    decision = decide({"retention": 0.95}, [Gate(metric="retention", min=0.9)], None)
    again = Decision(**decision.model_dump())
    assert again == decision and decision.summary() == "all 1 gates passed"
