"""Fifty forget requests filed at the same moment through the Python API, each from its own workspace handle:
none is lost, the change log records each once in an intact chain, and the forget-request sensor turns each into
exactly one run (ticking again launches nothing)."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor

from support_forget import HashEmbedder, small_deployment, subject
from support_keys import keyholder

from pipelines.deployment.workspace import Workspace
from pipelines.forget.filing import file_request, sign_request
from pipelines.state.requests import ForgetRequest

N = 50


def test_fifty_concurrent_filings_become_fifty_runs_exactly_once(tmp_path, monkeypatch):
    from dagster import RunsFilter

    from assets.runner import instance, tick_sensor

    ws = small_deployment(tmp_path / "home", n_subjects=N, facts_per_subject=1)
    monkeypatch.setenv("MEMGOV_HOME", str(ws.home))
    monkeypatch.delenv("MEMGOV_POLICY", raising=False)
    monkeypatch.setattr("assets.jobs.shared_embedder", HashEmbedder)
    key = keyholder(ws.home, "privacy-office")

    def file_one(i: int) -> bool:
        own = Workspace.open(ws.home)  # each caller its own handle: its own database connection and log writer
        req = ForgetRequest(request_id=f"req-{i:02d}", requester="privacy-office",
                            selector={"subject_ids": [subject(i)]}, reason="erasure request",
                            legal_basis="gdpr_art17", deadline=dt.datetime.now(dt.UTC) + dt.timedelta(days=3))
        return file_request(own, req, sign_request(key, req))[1]

    with ThreadPoolExecutor(max_workers=N) as pool:
        created = list(pool.map(file_one, range(N)))
    ids = [f"req-{i:02d}" for i in range(N)]
    assert created == [True] * N
    assert sorted(r.request_id for r in ws.requests.list()) == ids
    received = [e["object"] for e in ws.log.events() if e["action"] == "forget.received"]
    assert sorted(received) == ids, "each filing logged exactly once"
    assert ws.log.verify().ok

    launched = tick_sensor(ws, "forget_request_sensor")
    assert len(launched) == N and all(r.success for r in launched)
    assert tick_sensor(ws, "forget_request_sensor") == []
    inst = instance(ws)
    for request_id in ids:
        assert len(inst.get_runs(filters=RunsFilter(tags={"dagster/run_key": request_id}))) == 1, request_id
        assert ws.requests.get(request_id).state != "received", request_id
    assert ws.log.verify().ok
