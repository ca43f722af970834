"""The releases view: one asset whose latest materialization is always the registry as it stands.

Every step that changes a release (a cycle's release, a decision, a waiver, a rollback, a forget request) records a
fresh materialization of it, so the asset's page never shows a status that has since changed.
"""

import datetime as dt

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    AssetSelection,
    MetadataValue,
    OpExecutionContext,
    RunRequest,
    asset,
    asset_check,
    define_asset_job,
    schedule,
)

from assets.automation import schedule_status
from assets.resources import MemgovResource
from pipelines.forget.alerts import route_deadline_alerts
from pipelines.forget.deadlines import OPEN, deadline_markdown, deadline_watch
from pipelines.governance.releases_view import releases_markdown, releases_view

RELEASES = AssetKey("releases")


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def releases_metadata(ws, policy) -> dict:
    view = releases_view(ws, policy)
    return {
        "registry": MetadataValue.md(releases_markdown(view)),
        "champion": view.champion or "none",
        "pending": ", ".join(view.pending) or "nothing",
        "open_forget_requests": len(view.requests),
        "policy": view.policy,
    }


def publish_releases(context: OpExecutionContext, ws, policy) -> None:
    """Record the registry as it is now, after the change this run made."""
    context.log_event(AssetMaterialization(asset_key=RELEASES, metadata=releases_metadata(ws, policy),
                                           description="releases after this run's change"))


@asset(key=RELEASES, group_name="cycle", deps=[AssetKey("release")])
def releases(context: AssetExecutionContext, memgov: MemgovResource) -> None:
    """Champion, candidates waiting for a decision (gates, changed facts, approvals still needed), open forget
    requests and the release that honours each. Refreshed by every decision; materialize it to re-read."""
    ws = memgov.workspace()
    context.add_output_metadata(releases_metadata(ws, memgov.load_policy()))


@asset_check(asset=RELEASES, description="Every open forget request is verified by its deadline and within the "
             "policy's unlearning.sla_hours: red when one is overdue, a warning when less than a quarter of the SLA "
             "is left.")
def forget_deadlines(memgov: MemgovResource) -> AssetCheckResult:
    ws, policy = memgov.workspace(), memgov.load_policy()
    sla = policy.unlearning.sla_hours
    statuses = deadline_watch(ws.requests.list(states=list(OPEN)), sla, now())
    overdue = [s for s in statuses if s.level == "overdue"]
    near = [s for s in statuses if s.level == "near"]
    worst = overdue or near
    delivery = route_deadline_alerts(ws.home, statuses)  # the hook the runbook names: outbox + optional webhook
    return AssetCheckResult(
        passed=not worst,
        severity=AssetCheckSeverity.ERROR if overdue else AssetCheckSeverity.WARN,
        description=("; ".join(s.line() for s in worst) if worst
                     else f"{len(statuses)} open forget request(s), all within {sla:g} h SLA and their deadlines"),
        metadata={"requests": MetadataValue.md(deadline_markdown(statuses, sla)), "overdue": len(overdue),
                  "near_deadline": len(near), "sla_hours": float(sla),
                  "alerted": ", ".join(delivery.sent) or "none new",
                  **({"alert_webhook_error": delivery.webhook_error} if delivery.webhook_error else {})},
    )


releases_refresh = define_asset_job(
    "releases_refresh", selection=AssetSelection.assets(RELEASES),
    description="Re-read the registry and the request store; the forget_deadlines check runs with it.")


@schedule(job=releases_refresh, cron_schedule="*/15 * * * *", default_status=schedule_status())
def forget_deadline_watch(context):
    """Every 15 minutes: the releases view refreshed and every forget request's deadline checked."""
    return RunRequest(run_key=None, tags={"memgov/trigger": "deadline-watch"})
