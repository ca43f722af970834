"""Sensors and the schedule: new batches start cycles, forget requests start exactly one run each."""


from dagster import (
    DagsterRunStatus,
    DefaultScheduleStatus,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    schedule,
    sensor,
)

from assets.automation import sensor_status
from assets.jobs import cycle_job, forget_request
from assets.resources import MemgovResource
from pipelines.cycle.stages import pending_batches
from pipelines.forget import pending_scrubs
from pipelines.forget.scrub import attempts_made, lease_live

MAX_BATCH_ATTEMPTS = 3


@sensor(job=cycle_job, minimum_interval_seconds=60, default_status=sensor_status())
def new_batch_sensor(context: SensorEvaluationContext, memgov: MemgovResource):
    """One cycle per new file in the inbox, keyed by the batch name so a batch is never run twice at once.

    A batch stays pending until its cycle records an outcome, so a cycle that died is run again (a new run key per
    attempt), up to MAX_BATCH_ATTEMPTS; then the sensor stops and says so rather than failing forever."""
    pending = pending_batches(memgov.workspace())
    if not pending:
        return SkipReason("no new batch in the inbox")
    first = pending[0]
    runs = context.instance.get_runs(filters=RunsFilter(tags={"memgov/batch": first.stem}))
    if any(r.status not in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
           for r in runs):
        return SkipReason(f"a cycle on {first.stem} is still running")
    if len(runs) >= MAX_BATCH_ATTEMPTS:
        return SkipReason(f"{len(runs)} cycles on {first.stem} ended without an outcome; fix the cause (see their "
                          f"runs) and run `memgov run --batch {first.name}`")
    return RunRequest(run_key=f"batch:{first.stem}" + (f"#attempt{len(runs) + 1}" if runs else ""),
                      run_config={"ops": {"admitted_batch": {"config": {"batch": first.name}}}},
                      tags={"memgov/batch": first.stem})


@sensor(job=forget_request, minimum_interval_seconds=30, default_status=sensor_status())
def forget_request_sensor(context: SensorEvaluationContext, memgov: MemgovResource):
    """Every received forget request becomes exactly one run per attempt: run_key = request id and attempt number,
    so a run that died part-way (its lease ran out, the journal still incomplete) is retried, never duplicated."""
    waiting = [r for r in pending_scrubs(memgov.workspace()) if not lease_live(r.evidence)]
    if not waiting:
        return SkipReason("no forget request waiting to be scrubbed")
    for req in waiting:
        attempt = attempts_made(req.evidence)
        yield RunRequest(run_key=req.request_id if attempt == 0 else f"{req.request_id}#attempt{attempt + 1}",
                         run_config={"ops": {"process_forget_request": {"config": {"request_id": req.request_id}}}},
                         tags={"memgov/request": req.request_id, "memgov/urgent": str(bool(req.urgent)).lower()})


@schedule(job=cycle_job, cron_schedule="0 3 * * *", default_status=DefaultScheduleStatus.STOPPED)  # stays off: the batch sensor runs each new batch
def nightly_cycle(context: ScheduleEvaluationContext):
    """The regular cycle: takes the oldest unprocessed batch, if any."""
    return RunRequest(run_key=None, tags={"memgov/trigger": "schedule"})
