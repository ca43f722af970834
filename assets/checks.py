"""Gates as blocking asset checks: a failed gate stops the release asset in the same run."""


from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from assets.cycle import evaluation_card
from evals.gates import verdicts_markdown


@asset_check(asset=evaluation_card, blocking=True, description="Every gate of the policy passes (thresholds in policies/*.yaml).")
def gates(evaluation_card: dict) -> AssetCheckResult:
    verdicts = evaluation_card["verdicts"]
    failed = [v["metric"] for v in verdicts if not v["passed"]]
    return AssetCheckResult(
        passed=evaluation_card["passed"],
        severity=AssetCheckSeverity.ERROR,
        description="failed: " + ", ".join(failed) if failed else "all gates passed",
        metadata={
            "release": evaluation_card["release_id"],
            "verdicts": MetadataValue.md(verdicts_markdown(verdicts)),
            **{f"metric/{k}": float(v) for k, v in evaluation_card["metrics"].items() if v is not None},
        },
    )
