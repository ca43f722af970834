"""`memgov run` killed with SIGKILL at stage boundaries and in the middle of LoRA training, on a team's own
checkpoint: afterwards no half-written release exists, the champion is untouched, the change log verifies, no
stale lock blocks the next run, the killed run is marked failed, and re-running converges. A second `memgov run`
beside a running one is refused with the name of the first."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support_byo import domain_fact, trained_checkpoint, write_data_dir
from support_keys import keyholder

from pipelines.cycle.stages import pending_batches
from pipelines.deployment.workspace import Workspace

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
KNOWN, NEW, UNSEEN = range(0, 40), range(60, 72), range(120, 150)


def _env(home: Path, policy: Path) -> dict[str, str]:
    return {**os.environ, "MEMGOV_HOME": str(home), "MEMGOV_POLICY": str(policy), "MEMGOV_LOG_LEVEL": "DEBUG",
            "MEMGOV_PROGRESS": "1",
            "COLUMNS": "250", "PYTHONUNBUFFERED": "1"}


def run_until(home: Path, policy: Path, pattern: str, delay_s: float = 0.0) -> str:
    """Start `memgov run`, SIGKILL it once its output shows `pattern` (plus `delay_s`); its output so far.

    Output is read as it comes, split at newlines and at the carriage returns of progress bars, so a kill can
    land on the first frame of the LoRA training bar, that is while it trains."""
    proc = subprocess.Popen([sys.executable, "-m", "memgov", "run"], cwd=ROOT, env=_env(home, policy),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    seen, pending = [], b""
    deadline = time.monotonic() + 300
    while True:
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        pending += chunk
        *lines, pending = re.split(rb"[\r\n]", pending)
        seen += [line.decode("utf-8", "replace") for line in lines]
        if any(re.search(pattern, line.decode("utf-8", "replace")) for line in lines):
            time.sleep(delay_s)
            os.killpg(proc.pid, signal.SIGKILL)
            break
        assert time.monotonic() < deadline, "\n".join(seen[-40:])
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before the kill point:\n" + "\n".join(seen[-40:])
    return "\n".join(seen)


def memgov(home: Path, policy: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "memgov", *args], cwd=ROOT, env=_env(home, policy),
                          capture_output=True, text=True)


def runs(home: Path) -> list:
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(home / "dagster")) as instance:
        return [r for r in instance.get_runs() if r.job_name == "governed_cycle"]


def approve_waiting(home: Path, policy: Path) -> None:
    """A release registered by a killed run waits for its approval like any other: approve it."""
    ws = Workspace.open(home)
    for release in [r for r in ws.registry.list() if r.status == "candidate"]:
        proc = memgov(home, policy, "approve", release.release_id, "--key", keyholder(home, "olga", "ml-lead"),
                      "--role", "ml-lead", "--reason", "its auto-approval was interrupted")
        assert proc.returncode == 0, proc.stdout


def next_batch(home: Path, n: int) -> str:
    from test_bring_your_own import batch

    name = f"b{n + 1:03d}"
    batch(home, name, [domain_fact(i) for i in range(72 + 8 * (n - 1), 80 + 8 * (n - 1))])
    return name


def assert_consistent(home: Path, name: str, before: tuple[str, set[str]], batch: str) -> None:
    """Whatever the kill interrupted: a release registered carries its gate verdict, and its batch then counts as
    done while a batch without one stays pending; the champion moves only to that release, passed and promoted
    by the policy's approver; the log verifies."""
    from pipelines.governance.promotion import read_card

    champion, known = before
    ws = Workspace.open(home)
    new = [r for r in ws.registry.list() if r.release_id not in known]
    assert len(new) <= 1, f"{name}: {[r.release_id for r in new]}"
    for release in new:
        verdict = read_card(ws, release).get("decision") or {}
        assert "passed" in verdict, f"{name}: {release.release_id} registered without its gate verdict"
        assert (release.status == "rejected") == (not verdict["passed"]), name
    if ws.registry.champion() != champion:
        promoted = [e for e in ws.log.events() if e["action"] == "release.promoted"][-1]
        assert new and promoted["object"] == new[0].release_id == ws.registry.champion(), name
        assert promoted["actor"] == "policy:team", name
    assert (batch in [p.stem for p in pending_batches(ws)]) == (not new), name
    assert ws.log.verify().ok, name


@pytest.fixture
def deployment(tmp_path):
    from test_bring_your_own import batch, team_policy

    checkpoint = trained_checkpoint(tmp_path / "llama", "llama", [domain_fact(i) for i in KNOWN])
    data = write_data_dir(tmp_path / "data", KNOWN, UNSEEN)
    home, policy = tmp_path / "home", team_policy(tmp_path)
    proc = memgov(home, policy, "init", "--base-model", str(checkpoint), "--data", str(data))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    batch(home, "b001", [domain_fact(i) for i in NEW])
    return home, policy


def test_a_cycle_killed_anywhere_leaves_nothing_half_done_and_the_next_run_converges(deployment):
    home, policy = deployment

    def after(step: str) -> str:
        return rf'STEP_SUCCESS - Finished execution of step "{step}"'

    faults = [("after admission", after("admitted_batch"), 0.0),
              ("after selection", after("selected_samples"), 0.0),
              ("mid LoRA training", r"lora update: +0%", 0.0),  # the bar's first frame: training has begun
              ("after the update", after("candidate_update"), 0.0),
              ("after the candidate model", after("candidate_model"), 0.0),
              ("after the index refresh", after("candidate_index"), 0.0),
              ("after evaluation, before the release", after("evaluation_card"), 0.0),
              # the release registered with its verdict and promoted, its step not yet recorded as done
              ("after the release, before its step ends", r'STEP_OUTPUT - Yielded output "result" of type '
                                                             r'"ReleaseOutcome"', 0.0)]
    batches = ["b001"]
    for name, pattern, delay in faults:
        if not pending_batches(Workspace.open(home)):  # an earlier kill landed after the release was registered
            approve_waiting(home, policy)
            batches.append(next_batch(home, len(batches)))
        ws = Workspace.open(home)
        before = ws.registry.champion(), {r.release_id for r in ws.registry.list()}
        run_until(home, policy, pattern, delay)
        assert_consistent(home, name, before, batches[-1])
        ws = Workspace.open(home)  # what was observed, for `pytest -s`
        print(f"killed {name}: releases {[(r.release_id, r.status) for r in ws.registry.list()]}, "
              f"pending {[p.stem for p in pending_batches(ws)]}, log verifies {ws.log.verify().ok}")
    killed = [r.run_id for r in runs(home)]
    assert len(killed) == len(faults)
    approve_waiting(home, policy)
    batches.append(next_batch(home, len(batches)))

    first = subprocess.Popen([sys.executable, "-m", "memgov", "run"], cwd=ROOT, env=_env(home, policy),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in first.stdout:  # once it holds the lock, a second run on the home is refused, naming the first
        if 'Started execution of step "admitted_batch"' in line:
            break
    second = memgov(home, policy, "run")
    assert second.returncode == 3 and "another cycle is running" in " ".join(second.stdout.split()), second.stdout
    rest = first.stdout.read()
    assert first.wait(timeout=600) == 0, rest[-3000:]

    while pending_batches(Workspace.open(home)):
        assert memgov(home, policy, "run").returncode == 0
    ws = Workspace.open(home)
    releases = [r.release_id for r in ws.registry.list()]
    assert releases == [f"r{n:04d}" for n in range(1, len(batches) + 2)], "one release per batch"
    assert ws.registry.champion() == releases[-1]
    assert ws.log.verify().ok and memgov(home, policy, "log", "verify").returncode == 0
    by_id = {r.run_id: r for r in runs(home)}
    assert [by_id[r].status.value for r in killed] == ["FAILURE"] * len(faults), "killed runs do not stay STARTED"
    interrupted = [e["object"] for e in ws.log.events() if e["action"] == "cycle.interrupted"]
    assert sorted(interrupted) == sorted(killed)
    assert not (home / "locks" / "cycle.holder.json").exists()
    assert memgov(home, policy, "run").returncode != 0, "every batch is done: nothing left to run"
