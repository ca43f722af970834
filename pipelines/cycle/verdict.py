"""The gate decision on a measured candidate: a pure function of the measurement and the policy.

The blocking-free gate check in the UI reports it, the card renders it and the release step acts on it; all three
call `judge`, so what a person sees and what the pipeline does cannot differ.
"""

from __future__ import annotations

from evals.gates import Decision, GateVerdict, decide
from pipelines.cycle.records import Measurement
from pipelines.forget.verify import request_verdicts
from policies import Policy


def judge(measurement: Measurement, policy: Policy) -> Decision:
    """The policy's gates on the candidate's metrics (relative ones against the champion's), a needed set that
    was missing failing its gates, and one verdict per honoured forget request."""
    gates = decide(measurement.metrics, policy.gates, measurement.champion_metrics, missing=measurement.missing)
    _, requests = request_verdicts(policy, measurement.metrics, measurement.forget_evidence)
    return Decision(passed=gates.passed and all(v["passed"] for v in requests),
                    verdicts=[*gates.verdicts, *(GateVerdict(**v) for v in requests)])
