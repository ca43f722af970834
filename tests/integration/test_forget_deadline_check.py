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


def test_the_alert_reaches_the_webhook_once_per_level_and_a_dead_webhook_is_reported(ws, monkeypatch):
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            received.append(json.loads(self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("MEMGOV_ALERT_WEBHOOK", f"http://127.0.0.1:{server.server_port}/hook")
        assert _check(monkeypatch, 0).passed and received == []
        near = _check(monkeypatch, 60)
        assert near.metadata["alerted"].text == "req-late"
        _check(monkeypatch, 61)  # the same level again: no second alert
        late = _check(monkeypatch, 80)
        assert [a["alerts"][0]["level"] for a in received] == ["near", "overdue"]
        assert "req-late" in received[1]["text"] and late.metadata["alerted"].text == "req-late"
    finally:
        server.shutdown()
    outbox = [json.loads(line) for line in (ws.home / "alerts" / "forget_deadlines.jsonl").read_text().splitlines()]
    assert [(a["request_id"], a["level"]) for a in outbox] == [("req-late", "near"), ("req-late", "overdue")]
    file(ws, "req-later", subject_ids=[subject(3)])
    monkeypatch.setenv("MEMGOV_ALERT_WEBHOOK", "http://127.0.0.1:9/unreachable")
    dead = _check(monkeypatch, 80)
    assert not dead.passed and "did not accept the alert after 3 attempts" in dead.metadata["alert_webhook_error"].text
