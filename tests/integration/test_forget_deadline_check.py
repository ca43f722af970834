"""The forget_deadlines check on the releases asset, run by Dagster on a real instance: green while requests are
within the SLA, red once one is overdue, naming it."""

from __future__ import annotations

import datetime as dt

import pytest
from support_forget import file, small_deployment, subject

from assets.definitions import defs


@pytest.fixture
def ws(tmp_path, monkeypatch):
    ws = small_deployment(tmp_path / "home")
    monkeypatch.setenv("MEMGOV_HOME", str(ws.home))
    monkeypatch.delenv("MEMGOV_POLICY", raising=False)
    file(ws, "req-late", subject_ids=[subject(2)])  # deadline in three days, SLA 72 h
    return ws


def _check(monkeypatch, hours_later: float):
    from dagster import DagsterInstance

    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours_later)
    monkeypatch.setattr("assets.views.now", lambda: later)
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("releases_refresh").execute_in_process(instance=instance)
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def test_an_overdue_request_turns_the_check_red(ws, monkeypatch):
    fresh = _check(monkeypatch, 0)
    assert fresh.check_name == "forget_deadlines" and fresh.passed
    near = _check(monkeypatch, 60)
    assert not near.passed and near.severity.value == "WARN" and "req-late (received)" in near.description
    late = _check(monkeypatch, 80)
    assert not late.passed and late.severity.value == "ERROR"
    assert "h overdue" in late.description and late.metadata["overdue"].value == 1
