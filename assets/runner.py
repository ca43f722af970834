"""Run jobs and tick sensors against the deployment's own Dagster instance (SQLite under MEMGOV_HOME by default)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from dagster import DagsterInstance, build_sensor_context

from pipelines.deployment.workspace import Workspace

DAGSTER_YAML = """\
# Local Dagster instance for memgov: SQLite storage under MEMGOV_HOME, no telemetry.
telemetry:
  enabled: false
storage:
  sqlite:
    base_dir: {base}
# One cycle at a time: a second cycle launched by a sensor or the UI waits in the queue (CLI runs take the
# home's cycle lock instead, pipelines/cycle/lock.py).
run_queue:
  tag_concurrency_limits:
    - key: memgov/cycle
      limit: 1
"""


def ensure_instance_home(ws: Workspace) -> Path:
    """The home's Dagster instance, its storage pointed inside this home: a home copied or restored elsewhere has
    its memgov-written dagster.yaml re-pointed here, so it never writes runs into the original's database."""
    home = ws.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    wanted = DAGSTER_YAML.format(base=home / "storage")
    if not cfg.exists() or (cfg.read_text() != wanted and cfg.read_text().startswith(DAGSTER_YAML.splitlines()[0])):
        cfg.write_text(wanted)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def instance(ws: Workspace) -> DagsterInstance:
    ensure_instance_home(ws)
    return DagsterInstance.get()


def _defs():
    from assets.definitions import defs

    return defs


def run_job(ws: Workspace, job_name: str, run_config: dict[str, Any] | None = None, tags: dict[str, str] | None = None):
    """Execute a job in this process, recorded in the deployment's instance (visible in the UI afterwards)."""
    from pipelines.cycle import lock

    job = _defs().get_job_def(job_name)
    config = {**(run_config or {}), "loggers": {"console": {"config": {"log_level": os.environ.get("MEMGOV_LOG_LEVEL", "WARNING")}}}}
    try:
        return job.execute_in_process(run_config=config, instance=instance(ws), tags=tags or {}, raise_on_error=False)
    finally:  # a cycle's lock is held until its run has ended (a run worker's ends with its process)
        lock.release(ws)


def output_of(result, node: str) -> Any:
    try:
        return result.output_for_node(node)
    except Exception:  # noqa: BLE001 - a skipped or failed step has no output
        return None


def run_cycle(ws: Workspace, batch: str | None = None):
    """A run of `governed_cycle` tagged with its batch (the oldest pending one when none is named), as the sensor
    tags its runs, so the UI's run list says which batch each cycle took."""
    from pipelines.cycle.stages import pending_batches

    config = {"ops": {"admitted_batch": {"config": {"batch": batch or ""}}}}
    pending = pending_batches(ws)
    named = Path(batch).stem if batch else (pending[0].stem if pending else "")
    tags = {"memgov/trigger": "cli", **({"memgov/batch": named} if named else {})}
    from pipelines.cycle import lock

    lock.acquire(ws, f"memgov run (pid {os.getpid()})")  # CycleBusy names the running cycle
    try:
        return run_job(ws, "governed_cycle", config, tags=tags)
    finally:
        lock.release(ws)


def tick_sensor(ws: Workspace, sensor_name: str) -> list:
    """Evaluate a sensor once and launch what it asks for, skipping run keys the instance has already seen."""
    inst = instance(ws)
    defs = _defs()
    sensor = defs.get_sensor_def(sensor_name)
    ctx = build_sensor_context(instance=inst, definitions=defs, resources=defs.resources)
    data = sensor.evaluate_tick(ctx)
    results = []
    for req in data.run_requests or []:
        if req.run_key and _run_key_seen(inst, req.run_key):
            continue
        tags = {**(req.tags or {}), "dagster/run_key": req.run_key or "", "dagster/sensor_name": sensor_name}
        results.append(run_job(ws, sensor.job_name, req.run_config, tags))
    return results


def _run_key_seen(inst: DagsterInstance, run_key: str) -> bool:
    from dagster import RunsFilter

    return bool(inst.get_runs(filters=RunsFilter(tags={"dagster/run_key": run_key}), limit=1))
