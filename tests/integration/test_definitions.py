"""The code location loads the way `dagster dev` and `dagster definitions validate` load it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_dagster_definitions_validate(tmp_path):
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "MEMGOV_HOME": str(tmp_path / "memgov")}
    proc = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-m", "assets.definitions"],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_loop_is_wired_as_designed():
    from dagster import AssetKey

    from assets.definitions import defs

    graph = defs.resolve_asset_graph()
    names = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert names == {"admitted_batch", "selected_samples", "candidate_update", "candidate_model", "candidate_index",
                     "evaluation_card", "release", "releases"}
    assert graph.get(AssetKey("release")).parent_keys == {AssetKey("evaluation_card")}
    assert graph.get(AssetKey("releases")).parent_keys == {AssetKey("release")}
    checks = {c.asset_key.to_user_string(): c.name for c in graph.asset_check_keys}
    assert checks == {"evaluation_card": "gates", "releases": "forget_deadlines"}
    assert defs.resolve_sensor_def("forget_request_sensor").job_name == "forget_request"
    assert defs.resolve_schedule_def("nightly_cycle").cron_schedule == "0 3 * * *"
    assert defs.resolve_schedule_def("forget_deadline_watch").job_name == "releases_refresh"
    assert {"release_decision", "gate_waiver", "rollback", "forget_request", "governed_cycle"} <= {
        j.name for j in defs.resolve_all_job_defs()}
