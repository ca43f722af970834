"""Whether forgetting holds, request by request: the checks a request must pass to become `verified`.

The numbers come from the candidate's evaluation (evals.suites); the bounds from the policy's unlearning
section. The same checks decide at the gate (a failing check rejects the candidate and fails the request,
leaving the champion as it was) and at promotion (a passing request becomes verified).
"""

from __future__ import annotations

from typing import Any

from policies import Policy


def request_checks(policy: Policy, metrics: dict[str, Any], evidence: dict[str, Any] | None) -> dict[str, bool]:
    """Each check by name: True when it holds. A number that was not measured does not hold."""
    u = policy.unlearning
    target = float(metrics.get("forget_mia_reference") or 0.5)  # what a model that never learned them shows

    def ok(name: str, test) -> bool:
        value = metrics.get(name)
        return value is not None and bool(test(float(value)))

    return {
        "forget_recall": ok("forget_recall", lambda v: v <= u.max_forget_recall),
        "forget_quality": ok("forget_quality", lambda v: v >= u.min_forget_quality),
        "membership_inference": ok("forget_mia_auc", lambda v: abs(v - target) <= u.max_mia_auc_gap),
        "representation_probe": ok("forget_probe_excess", lambda v: v <= u.max_probe_excess)
        or ok("forget_probe_p", lambda p: p >= u.probe_alpha),
        "retain_recall": ok("retention", lambda v: v >= u.min_retain_recall),
        "index_clean": bool((evidence or {}).get("index_clean", False)),
    }


def bounds(policy: Policy) -> dict[str, str]:
    u = policy.unlearning
    return {
        "forget_recall": f"<= {u.max_forget_recall}",
        "forget_quality": f">= {u.min_forget_quality}",
        "membership_inference": f"|auc - reference auc (0.5 without a reference)| <= {u.max_mia_auc_gap}",
        "representation_probe": f"excess <= {u.max_probe_excess}, or not significant (p >= {u.probe_alpha})",
        "retain_recall": f">= {u.min_retain_recall}",
        "index_clean": "no forgotten document retrieved",
    }


def request_verdicts(policy: Policy, metrics: dict[str, Any],
                     evidence: dict[str, dict[str, Any]]) -> tuple[dict[str, dict[str, bool]], list[dict]]:
    """Per-request checks (evidence: request id -> its scrub evidence), and one gate verdict per request for the
    card (a failed request blocks the candidate). Pure: the gate decision calls it."""
    checks: dict[str, dict[str, bool]] = {}
    verdicts: list[dict] = []
    limits = bounds(policy)
    for rid, found in evidence.items():
        held = request_checks(policy, metrics, found)
        checks[rid] = held
        failed = [k for k, v in held.items() if not v]
        verdicts.append({
            "metric": f"forget_request:{rid}", "value": float(len(held) - len(failed)),
            "champion_value": None, "threshold": f"all {len(held)} forgetting checks hold",
            "passed": not failed, "required": True,
            "reason": "every check held" if not failed else "; ".join(f"{k} {limits[k]}" for k in failed) + " failed",
        })
    return checks, verdicts


def gate_evidence(evidence: dict[str, Any] | None) -> dict[str, Any]:
    """What of a request's evidence its checks read: the scrub's finding on the index (never the forgotten data)."""
    return {"index_clean": bool((evidence or {}).get("index_clean", False))}


__all__ = ["bounds", "gate_evidence", "request_checks", "request_verdicts"]
