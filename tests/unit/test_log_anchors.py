"""Release manifests anchor the change log, so rewrites the hash chain alone cannot see are found: a consistently
re-chained file (an early event edited, every later hash recomputed) and a tail cut before a release's anchor."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipelines.core.digests import canonical_json
from pipelines.deployment.registry.anchors import anchor_problems
from pipelines.deployment.workspace import Workspace
from pipelines.state.ledger.changelog import ChangeLog, event_hash


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = Workspace.open(tmp_path / "home")
    model = ws.store.put_bytes(canonical_json({"kind": "memgov.dir/v1", "files": [], "tag": "weights"}))
    for i in range(3):
        ws.log.append("ops", "note", f"thing-{i}", reason="before the release")
        ws.registry.create({"base_model": "tiny", "model": model, "cycle": f"c{i}"}, "system:cycle", "candidate")
    return ws


def rewrite(ws: Workspace, change) -> None:
    """Apply `change` to the events, then re-chain every hash: the file verifies as a chain again."""
    events = change(ws.log.events())
    prev = "0" * 64
    lines = []
    for i, event in enumerate(events, start=1):
        event = {**event, "seq": i, "prev_hash": prev}
        event["hash"] = event_hash(event)
        prev = event["hash"]
        lines.append(json.dumps(event, sort_keys=True))
    ws.log.path.write_text("\n".join(lines) + "\n")


def chain_only(ws: Workspace) -> ChangeLog:
    """The same file read without the witness: what the chain and the anchors find on their own."""
    return ChangeLog(ws.log.path)


def verify_cli(ws: Workspace) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memgov", "log", "verify", "--home", str(ws.home)],
                          capture_output=True, text=True, env={**os.environ, "COLUMNS": "250"})


def test_every_release_anchors_the_log_and_an_untouched_log_holds_them(ws):
    assert all(r.log_head for r in ws.registry.list())
    assert anchor_problems(ws.registry, ws.log) == (3, [])
    proc = verify_cli(ws)
    assert proc.returncode == 0 and "3 release anchors hold" in proc.stdout, proc.stdout + proc.stderr


def test_a_consistently_rechained_rewrite_is_found_by_the_anchors(ws):
    def edit_first(events):
        events[0]["reason"] = "nothing happened here"
        return events

    rewrite(ws, edit_first)
    assert chain_only(ws).verify().ok, "the chain alone is fooled"
    checked, problems = anchor_problems(ws.registry, chain_only(ws))
    assert checked == 3 and len(problems) == 3 and "r0001" in problems[0] and "rewritten" in problems[0]
    proc = verify_cli(ws)
    assert proc.returncode == 1 and "the log was rewritten" in proc.stdout


def test_a_tail_cut_before_a_release_anchor_is_found(ws):
    anchor = ws.registry.get("r0003").log_head["seq"]
    rewrite(ws, lambda events: events[: anchor - 1])
    assert chain_only(ws).verify().ok
    _, problems = anchor_problems(ws.registry, chain_only(ws))
    assert problems == [f"release r0003 was registered after event {anchor}, but the log ends at {anchor - 1}: "
                        "events were cut from the end"]
