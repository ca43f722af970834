"""A demo deployment with candidates waiting for a human: built on the champion's weights and index snapshot,
with a small evaluation card, so governance tests train nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from support_keys import adopt_policy

from pipelines.deployment.workspace import Workspace
from policies import load_policy

POLICY = load_policy("default")


def memgov(home: Path, *args: str) -> subprocess.CompletedProcess:
    """The CLI as an operator runs it: on the deployment's own policy, whatever the demo left in the environment."""
    env = {**os.environ, "MEMGOV_HOME": str(home), "COLUMNS": "250"}
    env.pop("MEMGOV_POLICY", None)
    return subprocess.run([sys.executable, "-m", "memgov", *args], capture_output=True, text=True, env=env)


def flat(proc: subprocess.CompletedProcess) -> str:
    return " ".join((proc.stdout + proc.stderr).split())


def demo_ws(demo_copy: Path) -> Workspace:
    """The demo's end state, switched to the human-approval policy the way an operator switches it."""
    adopt_policy(demo_copy, "default")
    ws = Workspace.open(demo_copy)
    status = {r.release_id: r.status for r in ws.registry.list()}
    assert ws.registry.champion() == "r0003", "these tests start from the demo story's end state"
    assert status == {"r0001": "tainted", "r0002": "tainted", "r0003": "champion", "r0004": "rejected"}
    return ws


def _card(ws: Workspace, new_facts: int, forget: int) -> str:
    folder = ws.work_dir / f"test-card-{new_facts}-{forget}"
    folder.mkdir(exist_ok=True)
    card = {"set_sizes": {"new_facts": new_facts, "forget": forget},
            "metrics": {"new_fact_recall": 0.97, "retention": 0.98, "forget_recall": 0.0},
            "decision": {"passed": True, "verdicts": []}}  # the gates' verdict, as the evaluation step records it
    (folder / "card.json").write_text(json.dumps(card))
    return ws.store.put_dir(folder)


def candidate(ws: Workspace, new_facts: int = 20, forget: int = 0, created_by: str = "system:cycle",
              honoured: tuple[str, ...] = (), parent: str | None = None) -> str:
    """A candidate waiting for approval, built on the champion's weights and index snapshot."""
    champ = ws.registry.get(parent or ws.registry.champion())
    fields = {"parent": champ.release_id, "base_model": champ.base_model, "model": champ.model,
              "index_snapshot": champ.index_snapshot, "policy_version": POLICY.label,
              "evaluation_card": _card(ws, new_facts, forget), "tombstones_honoured": list(honoured),
              "cycle": f"governance-test-{new_facts}-{forget}"}
    rid = ws.registry.create(fields, created_by, "candidate for a governance test").release_id
    assert ws.registry.status(rid) == "candidate"
    return rid


def actions_on(ws: Workspace, obj: str) -> list[str]:
    return [e["action"] for e in ws.log.events() if e["object"] == obj]


