"""A process killed (SIGKILL, no `finally`) at each point inside release and promotion where two writes meet; the
next start finishes the change: one release per batch, the promotion logged, the canary verdict recorded, no
release left `approved`, and the change log, the champion pointer and every status record still verify."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.core.digests import canonical_json, digest_of
from pipelines.core.failpoints import POINTS
from pipelines.cycle.recovery import recover
from pipelines.cycle.stages import PROCESSED_KEY
from pipelines.cycle.verdict import judge
from pipelines.deployment.workspace import Workspace
from pipelines.governance import promotion
from policies import load_policy, merge_overrides

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"new_fact_recall": 0.95, "retention": 0.97, "paraphrase_recall": 0.1, "locality": None, "perplexity": 4.0,
        "forget_recall": None, "rag_support": 0.9}
CHAMPION = {**GOOD, "new_fact_recall": 0.05, "perplexity": 3.5}

# The release step of one cycle, as the Dagster asset runs it, with the canary answering from a stub (the weights
# here are a placeholder, not a model).
SCRIPT = """
import sys
from pipelines.governance import promotion
from pipelines.cycle.records import Measurement
from pipelines.cycle.release_stage import release_stage
from pipelines.deployment.workspace import Workspace
from policies import load_policy, merge_overrides

promotion.canary = lambda ws, policy, rid: (True, 1.0)
home, store, requests, measurement = sys.argv[1:5]
ws = Workspace.open(home, store_url=store, requests_url=requests)
policy = merge_overrides(load_policy("default"), {"approval": {"mode": "auto"}}, "auto.yaml")
release_stage(ws, policy, Measurement.model_validate_json(open(measurement).read()))
"""


def _auto():
    return merge_overrides(load_policy("default"), {"approval": {"mode": "auto"}}, "auto.yaml")


def _open(tmp_path: Path) -> Workspace:
    return Workspace.open(tmp_path / "home", store_url=str(tmp_path / "store"),
                          requests_url=f"sqlite:///{tmp_path / 'requests.db'}")


@pytest.fixture
def ws(tmp_path) -> Workspace:
    ws = _open(tmp_path)
    model = ws.store.put_bytes(canonical_json({"kind": "memgov.dir/v1", "files": [], "tag": "weights"}))
    rid = ws.registry.create({"base_model": "tiny", "model": model, "cycle": "init"}, "system:init", "base").release_id
    ws.registry.set_status(rid, "approved", "system:init", "base")
    assert ws.registry.promote(rid, "system:init", "base", expected=None)
    return ws


def _measurement(ws: Workspace, tmp_path: Path) -> Path:
    from pipelines.cycle.records import Measurement

    folder = tmp_path / "card"
    folder.mkdir(exist_ok=True)
    card = {"release_id": "candidate of b1 (child of r0001)", "metrics": GOOD, "set_sizes": {"new_facts": 3},
            "decision": {}}
    fields = {"cycle": "b1", "batch": "b1", "champion": ws.registry.champion(), "policy": "default",
              "model": ws.registry.get(ws.registry.champion()).model, "adapter": None, "adapter_method": None,
              "index_snapshot": "none", "edits": [], "unlearning": [], "honoured": [], "metrics": GOOD,
              "champion_metrics": CHAMPION, "missing": {}, "forget_evidence": {}, "card": card,
              "card_digest": "sha256:" + "0" * 64, "card_md": "# card\n"}
    m = Measurement(**fields)
    card = {**card, "decision": judge(m, _auto()).model_dump()}
    (folder / "card.json").write_text(json.dumps(card))
    (folder / "card.md").write_text("# card\n")
    m = m.model_copy(update={"card": card, "card_digest": ws.store.put_dir(folder)})
    path = tmp_path / "measurement.json"
    path.write_text(m.model_dump_json())
    return path


def _release_step(ws: Workspace, tmp_path: Path, failpoint: str | None) -> int:
    env = {**os.environ, "MEMGOV_FAILPOINT": failpoint or ""}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(ws.home), ws.store_url, ws.requests_url,
                           str(_measurement(ws, tmp_path))], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr[-3000:]
    return proc.returncode


@pytest.mark.parametrize("point", POINTS)
def test_a_process_killed_inside_release_or_promotion_is_finished_on_the_next_start(ws, tmp_path, point,
                                                                                    monkeypatch):
    assert _release_step(ws, tmp_path, point) == -signal.SIGKILL, f"the process did not reach {point}"
    monkeypatch.setattr(promotion, "canary", lambda ws, policy, rid: (True, 1.0))
    ws = _open(tmp_path)  # a new process: nothing cached from before the kill
    done = recover(ws, _auto())
    assert done, f"killed at {point}, the next start found nothing to finish"
    events = ws.log.events()
    of = [e["action"] for e in events if e["object"] == "r0002"]
    assert [r.release_id for r in ws.registry.list()] == ["r0001", "r0002"], "one release for the batch"
    assert ws.store.read_json(PROCESSED_KEY) == ["b1"], "the batch is not taken again"
    assert ws.registry.champion() == "r0002" and ws.registry.status("r0002") == "champion"
    assert ws.registry.status("r0001") == "retired"
    assert of.count("release.promoted") == 1, of
    assert of.count("canary.passed") == 1 and of.index("canary.passed") > of.index("release.promoted"), of
    assert ws.log.verify().ok and ws.registry.pointer_problems() == []
    assert ws.registry.record_problems("r0001") == [] and ws.registry.record_problems("r0002") == []
    assert recover(ws, _auto()) == [], "recovery is done once"


def test_an_uninterrupted_release_step_leaves_nothing_to_recover(ws, tmp_path, monkeypatch):
    assert _release_step(ws, tmp_path, None) == 0
    monkeypatch.setattr(promotion, "canary", lambda ws, policy, rid: (True, 1.0))
    ws = _open(tmp_path)
    assert ws.registry.champion() == "r0002"
    assert recover(ws, _auto()) == []


def test_a_swap_that_never_happened_is_abandoned_not_completed(ws):
    """The intent is logged, then the process dies before the pointer moves: the move is abandoned, logged."""
    model = ws.registry.get("r0001").model
    rid = ws.registry.create({"base_model": "tiny", "model": model, "cycle": "c2", "parent": "r0001"}, "c", "x").release_id
    ws.registry.set_status(rid, "approved", "ops", "ok")
    pointer = ws.store.read_text("registry/champion")
    ws.log.append("ops", "release.promotion_started", rid, "about to move", details={
        "previous": "r0001", "pointer": "sha256:" + "1" * 64, "was": digest_of(pointer.encode()),
        "action": "release.promoted"})
    assert ws.registry.recover() == "abandoned"
    assert ws.registry.champion() == "r0001" and ws.log.events()[-1]["action"] == "release.promotion_abandoned"
    assert ws.registry.pointer_problems() == []
