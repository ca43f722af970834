"""Release history read back from the change log: who served when, how it got there, who approved it."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from pipelines.core.digests import canonical_json
from pipelines.deployment.registry.history import service_periods, serving_at
from pipelines.deployment.workspace import Workspace


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace.open(tmp_path / "home")
    model = ws.store.put_bytes(canonical_json({"kind": "memgov.dir/v1", "files": [], "tag": "weights"}))
    previous = None
    for i, approver in enumerate(("system:init", "bob", "carol")):
        rid = ws.registry.create({"base_model": "tiny", "model": model, "cycle": f"c{i}", "parent": previous},
                                 "system:cycle", "candidate").release_id
        if approver != "system:init":
            ws.registry.add_approval(rid, approver, "ml-lead", "approve", f"card {rid} reviewed")
        ws.registry.set_status(rid, "approved", approver, "approved")
        ws.registry.promote(rid, approver, f"promote {rid}", expected=previous)
        previous = rid
    ws.registry.rollback("r0002", "dave", "regression in r0003")
    return ws


def cli(ws: Workspace, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memgov", *args, "--home", str(ws.home)], capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "250"})


def test_each_move_of_the_champion_is_a_period_with_its_approvals(ws):
    periods = service_periods(ws.log.events())
    assert [(p.release_id, p.how, p.by) for p in periods] == [
        ("r0001", "promoted", "system:init"), ("r0002", "promoted", "bob"), ("r0003", "promoted", "carol"),
        ("r0002", "rolled back", "dave")]
    assert periods[1].approvals == ["bob (ml-lead): card r0002 reviewed"] and periods[0].approvals == []
    assert [p.end for p in periods[:-1]] == [p.start for p in periods[1:]] and periods[-1].end is None
    assert serving_at(periods, datetime.fromisoformat(periods[2].start)).release_id == "r0003"
    assert serving_at(periods, datetime.now(UTC)).release_id == "r0002"
    assert serving_at(periods, datetime.now(UTC) - timedelta(days=1)) is None


def test_the_cli_answers_for_a_moment_and_names_a_bad_time(ws):
    proc = cli(ws, "history")
    assert proc.returncode == 0 and "rolled back" in proc.stdout and "dave" in proc.stdout, proc.stdout + proc.stderr
    start = service_periods(ws.log.events())[2].start
    proc = cli(ws, "status", "--at", start)
    assert proc.returncode == 0 and "r0003" in proc.stdout and "carol (ml-lead)" in proc.stdout, proc.stdout
    proc = cli(ws, "status", "--at", "last tuesday")
    assert proc.returncode == 2 and "is not an ISO time" in proc.stdout + proc.stderr
