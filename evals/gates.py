"""Release gates: pure decisions over a candidate's metrics and the champion's.

A gate holds one metric to absolute bounds and/or bounds relative to the champion in service.
`decide` never touches models or files, so every branch is unit-tested and the Dagster asset check
that wraps it only reports what it returns.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from evals.names import KNOWN_METRICS

_THRESHOLDS = ("min", "max", "min_delta_vs_champion", "max_delta_vs_champion", "max_ratio_vs_champion")


class Gate(BaseModel):
    """One metric's acceptance rule; every threshold that is set must hold.

    - min / max: absolute bounds (value >= min, value <= max);
    - min_delta_vs_champion: value >= champion + delta (e.g. -0.01: at most 0.01 worse than the champion);
    - max_delta_vs_champion: value <= champion + delta (e.g. 0.0 for forget_recall: never above the champion);
    - max_ratio_vs_champion: value <= champion * ratio (e.g. 1.25 for perplexity; needs a positive champion value);
    - required: a failing gate that is not required is reported but does not block the release.
    """

    model_config = ConfigDict(extra="forbid")

    metric: str
    min: float | None = None
    max: float | None = None
    min_delta_vs_champion: float | None = None
    max_delta_vs_champion: float | None = None
    max_ratio_vs_champion: float | None = None
    required: bool = True

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in KNOWN_METRICS:
            raise ValueError(f"unknown metric '{value}'; known metrics: {', '.join(KNOWN_METRICS)}")
        return value

    @field_validator("max_ratio_vs_champion")
    @classmethod
    def _positive_ratio(cls, value: float | None) -> float | None:
        if value is not None and not value > 0:
            raise ValueError(f"max_ratio_vs_champion must be > 0 (e.g. 1.25 allows 25% worse), got {value}")
        return value

    @model_validator(mode="after")
    def _has_threshold(self) -> Gate:
        if all(getattr(self, name) is None for name in _THRESHOLDS):
            raise ValueError(f"gate on '{self.metric}' sets no threshold; set at least one of: {', '.join(_THRESHOLDS)}")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"gate on '{self.metric}': min ({self.min}) is greater than max ({self.max})")
        return self

    @property
    def is_relative(self) -> bool:
        return any(
            v is not None
            for v in (self.min_delta_vs_champion, self.max_delta_vs_champion, self.max_ratio_vs_champion)
        )


class GateVerdict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str
    value: float | None
    champion_value: float | None
    threshold: str
    passed: bool
    reason: str
    required: bool = True


class Decision(BaseModel):
    """All verdicts; `passed` is False when any required gate failed."""

    model_config = ConfigDict(extra="forbid")

    passed: bool
    verdicts: list[GateVerdict]

    @property
    def failed(self) -> list[GateVerdict]:
        return [v for v in self.verdicts if not v.passed]

    def summary(self) -> str:
        if not self.failed:
            return f"all {len(self.verdicts)} gates passed"
        parts = [f"{v.metric}: {v.reason}" + ("" if v.required else " (advisory)") for v in self.failed]
        return "; ".join(parts)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def _signed(delta: float) -> str:
    return f"+ {_fmt(delta)}" if delta >= 0 else f"- {_fmt(-delta)}"


def _checks(gate: Gate, champion_value: float | None) -> list[tuple[str, str, float, bool]]:
    """(threshold text, operator, bound, applies) for every threshold the gate sets."""
    out: list[tuple[str, str, float, bool]] = []
    if gate.min is not None:
        out.append((f">= {_fmt(gate.min)}", ">=", gate.min, True))
    if gate.max is not None:
        out.append((f"<= {_fmt(gate.max)}", "<=", gate.max, True))
    have = champion_value is not None
    c = champion_value if have else math.nan
    if gate.min_delta_vs_champion is not None:
        bound = c + gate.min_delta_vs_champion
        text = f">= champion {_signed(gate.min_delta_vs_champion)}" + (f" ({_fmt(bound)})" if have else "")
        out.append((text, ">=", bound, have))
    if gate.max_delta_vs_champion is not None:
        bound = c + gate.max_delta_vs_champion
        text = f"<= champion {_signed(gate.max_delta_vs_champion)}" + (f" ({_fmt(bound)})" if have else "")
        out.append((text, "<=", bound, have))
    if gate.max_ratio_vs_champion is not None:
        bound = c * gate.max_ratio_vs_champion
        text = f"<= champion x {_fmt(gate.max_ratio_vs_champion)}" + (f" ({_fmt(bound)})" if have else "")
        out.append((text, "<=", bound, have))
    return out


def _verdict(gate: Gate, value: float | None, champion_value: float | None, has_champion: bool) -> GateVerdict:
    checks = _checks(gate, champion_value)
    threshold = " and ".join(text for text, *_ in checks)

    def verdict(passed: bool, reason: str) -> GateVerdict:
        return GateVerdict(
            metric=gate.metric,
            value=value,
            champion_value=champion_value,
            threshold=threshold,
            passed=passed,
            reason=reason,
            required=gate.required,
        )

    if value is None:
        return verdict(True, "not applicable (empty set)")
    if math.isnan(value):
        return verdict(False, "value is NaN")
    if (
        gate.max_ratio_vs_champion is not None
        and champion_value is not None
        and not champion_value > 0
    ):
        return verdict(False, f"ratio gate needs a positive champion value, champion has {_fmt(champion_value)}")

    failures, skipped = [], []
    for text, op, bound, applies in checks:
        if not applies:
            skipped.append(text)
            continue
        ok = value >= bound if op == ">=" else value <= bound
        if not ok:
            failures.append(f"{_fmt(value)} is not {text}")
    if failures:
        return verdict(False, "; ".join(failures))
    applied = len(checks) - len(skipped)
    if skipped and not has_champion:
        note = "no champion to compare"
    elif skipped:
        note = "champion has no value for this metric"
    else:
        note = ""
    if applied == 0:
        return verdict(True, f"skipped: {note}")
    reason = f"{_fmt(value)} meets {' and '.join(t for t, *_, a in checks if a)}"
    return verdict(True, f"{reason}; relative check skipped: {note}" if skipped else reason)


def decide(
    metrics: Mapping[str, float | None],
    gates: Sequence[Gate | Mapping],
    champion: Mapping[str, float | None] | None,
    missing: Mapping[str, str] | None = None,
) -> Decision:
    """Apply every gate to the candidate's metrics; relative gates compare with the champion's metrics.

    A metric that is None passes as not applicable (nothing to measure this cycle: no edits, no forget request),
    unless `missing` names it: then the set it needs was required but could be neither read nor derived, and the
    gate fails with that message. A relative gate with no champion (first release) or no champion value for its
    metric is skipped, absolute parts still apply.
    A gate whose metric the candidate did not report at all fails: a missing number must not pass silently (with
    `missing`'s message for it when there is one, e.g. instruction_score on a batch without instructions).
    """
    parsed = [g if isinstance(g, Gate) else Gate(**g) for g in gates]
    verdicts: list[GateVerdict] = []
    for gate in parsed:
        champion_value = None if champion is None else _as_float(champion.get(gate.metric))
        if gate.metric not in metrics:
            verdicts.append(
                GateVerdict(
                    metric=gate.metric,
                    value=None,
                    champion_value=champion_value,
                    threshold=" and ".join(t for t, *_ in _checks(gate, champion_value)),
                    passed=False,
                    reason=(missing or {}).get(gate.metric) or f"metric '{gate.metric}' missing from the candidate's results",
                    required=gate.required,
                )
            )
            continue
        value = _as_float(metrics[gate.metric])
        if value is None and missing and gate.metric in missing:
            verdicts.append(GateVerdict(metric=gate.metric, value=None, champion_value=champion_value,
                                        threshold=" and ".join(t for t, *_ in _checks(gate, champion_value)),
                                        passed=False, reason=missing[gate.metric], required=gate.required))
            continue
        verdicts.append(_verdict(gate, value, champion_value, champion is not None))
    passed = all(v.passed for v in verdicts if v.required)
    return Decision(passed=passed, verdicts=verdicts)


def _as_float(value: float | None) -> float | None:
    return None if value is None else float(value)


__all__ = ["Decision", "Gate", "GateVerdict", "decide"]


def verdicts_markdown(verdicts: list[dict[str, Any]]) -> str:
    """The gates as a Markdown table, for the UI's check metadata and the terminal."""
    lines = ["| gate | value | champion | threshold | verdict |", "| --- | --- | --- | --- | --- |"]
    for v in verdicts:
        value = "n/a" if v.get("value") is None else _fmt(v["value"])
        champ = "n/a" if v.get("champion_value") is None else _fmt(v["champion_value"])
        verdict = "pass" if v["passed"] else "**FAIL**"
        lines.append(f"| {v['metric']} | {value} | {champ} | {v['threshold']} | {verdict} ({v.get('reason', '')}) |")
    return "\n".join(lines)
