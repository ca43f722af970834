"""A whole cycle and an urgent forget request with Dagster's instance (runs, event log, schedules) and the request
store both on a real PostgreSQL server: the instance's storage block is the one shipped in
infra/dagster/dagster.postgres.yaml, pointed at the test server through the same environment variables."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support_byo import domain_fact, trained_checkpoint, write_data_dir
from support_keys import keyholder

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
KNOWN, NEW, UNSEEN = range(0, 40), range(60, 72), range(120, 150)


def test_a_cycle_and_a_forget_request_on_postgres(postgres, tmp_path, monkeypatch):
    from test_bring_your_own import batch, team_policy

    dagster_db, requests_db = postgres.create_database("dagster"), postgres.create_database("requests")
    requests_url = postgres.url(requests_db)
    env = {"MEMGOV_HOME": str(tmp_path / "home"), "MEMGOV_REQUESTS_URL": requests_url,
           "DAGSTER_PG_URL": postgres.url(dagster_db, driver="psycopg2")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    home = tmp_path / "home"
    shipped = yaml.safe_load((ROOT / "infra" / "dagster" / "dagster.postgres.yaml").read_text())
    (home / "dagster").mkdir(parents=True)
    (home / "dagster" / "dagster.yaml").write_text(yaml.safe_dump({"telemetry": {"enabled": False},
                                                                   "storage": shipped["storage"]}))
    policy = team_policy(tmp_path)
    monkeypatch.setenv("MEMGOV_POLICY", str(policy))

    def memgov(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "memgov", *args], cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "COLUMNS": "250"})

    checkpoint = trained_checkpoint(tmp_path / "llama", "llama", [domain_fact(i) for i in KNOWN])
    data = write_data_dir(tmp_path / "data", KNOWN, UNSEEN)
    proc = memgov("init", "--base-model", str(checkpoint), "--data", str(data))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    batch(home, "b001", [domain_fact(i) for i in NEW])
    proc = memgov("run")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    subject = domain_fact(61)["subject_ids"][0]
    proc = memgov("forget", "--id", "req-pg", "--key", keyholder(home, "privacy-office"), "--subject-id", subject,
                  "--reason", "erasure request", "--urgent")
    assert proc.returncode == 0, proc.stdout + proc.stderr

    from dagster import DagsterInstance

    from assets.runner import tick_sensor
    from pipelines.deployment.workspace import Workspace
    from pipelines.state.requests.store import RequestStore

    ws = Workspace.open(home)
    assert len(tick_sensor(ws, "forget_request_sensor")) == 1
    assert not (home / "requests.db").exists(), "no SQLite request store beside the Postgres one"
    store = RequestStore(requests_url)
    assert store.get("req-pg").state == "verified"
    assert ws.registry.champion() == "r0003" and ws.registry.status("r0002") == "tainted"

    with DagsterInstance.from_config(str(home / "dagster")) as instance:
        kinds = {type(s).__name__ for s in (instance.run_storage, instance.event_log_storage,
                                            instance.schedule_storage)}
        assert kinds == {"PostgresRunStorage", "PostgresEventLogStorage", "PostgresScheduleStorage"}
        runs = {r.job_name: r for r in instance.get_runs()}
        assert runs["governed_cycle"].is_success and runs["forget_request"].is_success
        assert runs["governed_cycle"].tags.get("memgov/batch") == "b001"
        events = instance.all_logs(runs["governed_cycle"].run_id)
        assert any(e.dagster_event and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION" for e in events)
        assert instance.all_instigator_state() is not None  # schedule storage answers on Postgres
    assert ws.log.verify().ok
