"""The Dagster code location: `dagster dev -m assets.definitions`."""

from __future__ import annotations

from dagster import Definitions, load_assets_from_modules

from assets import cycle, views
from assets.checks import gates
from assets.executors import deployment_executor
from assets.jobs import (
    cycle_job,
    forget_filing,
    forget_request,
    gate_waiver,
    release_decision,
    rollback,
    unlearning_only,
)
from assets.resources import deployment_resource
from assets.sensors import forget_request_sensor, new_batch_sensor, nightly_cycle

defs = Definitions(
    assets=load_assets_from_modules([cycle, views]),
    asset_checks=[gates, views.forget_deadlines],
    jobs=[cycle_job, release_decision, gate_waiver, rollback, forget_filing, forget_request, unlearning_only,
          views.releases_refresh],
    sensors=[new_batch_sensor, forget_request_sensor],
    schedules=[nightly_cycle, views.forget_deadline_watch],
    resources={"memgov": deployment_resource()},
    executor=deployment_executor(),
)
