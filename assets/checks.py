"""The gates as an asset check: the UI shows each verdict beside the measured card.

The check reports the decision the release step acts on (both call `pipelines.cycle.verdict.judge`); it does not
block, so a rejected candidate is still registered and rejected by the release step, read as a verdict.
"""

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from assets.cycle import evaluation_card
from assets.resources import MemgovResource
from evals.gates import verdicts_markdown
from pipelines.cycle.records import Measurement
from pipelines.cycle.release_stage import gate_decision


@asset_check(asset=evaluation_card, description="Every gate of the policy passes (thresholds in policies/*.yaml).")
def gates(evaluation_card: Measurement, memgov: MemgovResource) -> AssetCheckResult:
    decision = gate_decision(memgov.workspace(), memgov.load_policy(), evaluation_card)
    verdicts = [v.model_dump() for v in decision.verdicts]
    failed = decision.failed
    rid = evaluation_card.card["release_id"]
    return AssetCheckResult(
        passed=decision.passed,
        severity=AssetCheckSeverity.ERROR,
        description=(f"{rid} rejected by {len(failed)} gate(s): {decision.summary()}" if failed
                     else f"{rid}: {decision.summary()}"),
        metadata={
            "candidate": rid,
            "failed_gates": len(failed),
            **{f"failed/{v.metric}": MetadataValue.text(
                f"{'-' if v.value is None else round(v.value, 4)} vs {v.threshold}") for v in failed},
            "verdicts": MetadataValue.md(verdicts_markdown(verdicts)),
            **{f"metric/{k}": float(v) for k, v in evaluation_card.metrics.items() if v is not None},
        },
    )
