"""The demo's story on the embedded default: three cycles, a forget request between the first two, a bad update rejected."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager

from rich.console import Console
from rich.table import Table

STORY = """\
cycle 1: new facts arrive with bad rows -> bad rows quarantined, LoRA update, gates pass, promoted
forget : ops file a forget request through the CLI -> the sensor's run scrubs data and index at once
cycle 2: changed facts (knowledge edits) + the forget request applied to the model -> gates pass, promoted
cycle 3: an over-aggressive update (batch policy) harms retention -> gate fails, rejected, champion unchanged"""


def peak_memory_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def _demo_key(ws, person: str):
    """The demo's people sign like anyone else: a key per person, granted in the deployment's keyring by the demo's
    keyring administrator. Their keys live outside the home (a real deployment keeps each key with its person)."""
    from memgov.demo.deployment import demo_key
    from pipelines.trust.grants import grant

    path, public = demo_key(ws, person)
    grant(ws.home, ws.log, person, [public], ["requester"], demo_key(ws, "demo-admin")[0],
          "the demo's privacy office files requests")
    return path


def run_demo(home: str | None, fresh: bool, console: Console) -> int:
    os.environ["MEMGOV_POLICY"] = "demo"
    os.environ.setdefault("TQDM_MININTERVAL", "1")
    from transformers.utils import logging as hf_logging

    from pipelines.deployment.workspace import Workspace

    hf_logging.disable_progress_bar()  # a bar per checkpoint load buries the story's own progress lines

    ws = Workspace.open(home)
    if fresh and ws.home.exists():
        from memgov.demo.deployment import demo_keys_dir

        keep = ws.models_cache  # the base model is cached by config hash: a fresh demo reuses it
        for child in ws.home.iterdir():
            if child != keep:
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        shutil.rmtree(demo_keys_dir(ws), ignore_errors=True)  # a new deployment: its own people and secrets
        if os.environ.get("MEMGOV_SECRETS"):  # a folder of the user's choosing: only what belonged to the old home
            for name in ("log.witness", "keyring.head"):
                (ws.secrets_dir / name).unlink(missing_ok=True)
        else:
            shutil.rmtree(ws.secrets_dir, ignore_errors=True)
        ws = Workspace.open(ws.home)
    timings: dict[str, float] = {}

    @contextmanager
    def stage(name: str):
        t0 = time.perf_counter()
        console.rule(f"[bold]{name}")
        yield
        timings[name] = time.perf_counter() - t0

    console.print(STORY)
    from assets.automation import switch_on
    from assets.runner import run_cycle, tick_sensor
    from memgov.demo.deployment import deploy_demo, world_of
    from memgov.report import print_cycle
    from policies import load_policy

    policy = load_policy("demo")
    with stage("init (base model, data tables, stores, index)"):
        info = deploy_demo(ws, policy)
        switch_on(ws.home, "the demo's home is for watching the loop: new batches and forget requests run by "
                           "themselves under `memgov ui`")
        console.print(f"$ memgov init --base-model {info.get('base_model')} --data {info.get('data')}")
        console.print(info)
    outs = {}
    with stage("cycle 1"):
        outs[1] = print_cycle(console, ws, run_cycle(ws))
    victim = world_of(policy).facts[0]
    with stage("forget request (CLI) + sensor run"):
        key = _demo_key(ws, "privacy-office")
        cmd = [sys.executable, "-m", "memgov", "forget", "--id", "req-demo-0001", "--key", str(key),
               "--subject", victim.subject, "--reason", "data subject erasure request", "--legal-basis", "gdpr_art17",
               "--deadline-days", "30", "--home", str(ws.home)]
        console.print(f"$ memgov forget --id req-demo-0001 --key {key} --subject <name> ...  (signed: the keyring "
                      "names privacy-office as the requester)")
        subprocess.run(cmd, check=True, env={**os.environ, "MEMGOV_HOME": str(ws.home)})
        runs = tick_sensor(ws, "forget_request_sensor")
        req = ws.requests.get("req-demo-0001")
        ev = req.evidence or {}
        console.print(f"sensor launched {len(runs)} run(s); request state: {req.state}; "
                      f"rows removed: {ev.get('scrub', {}).get('data', {}).get('rows_removed')}; "
                      f"index clean: {ev.get('index_clean')}; tainted: {ev.get('tainted_releases')}")
    with stage("cycle 2"):
        outs[2] = print_cycle(console, ws, run_cycle(ws))
    with stage("cycle 3"):
        outs[3] = print_cycle(console, ws, run_cycle(ws))
    return summarize(console, ws, outs, timings)


def summarize(console: Console, ws, outs: dict, timings: dict[str, float]) -> int:
    console.rule("[bold]summary")
    table = Table(title="releases")
    for col in ("release", "status", "cycle", "parent"):
        table.add_column(col)
    for rel in ws.registry.list():
        table.add_row(rel.release_id, rel.status, str(rel.cycle), str(rel.parent or ""))
    console.print(table)
    champion = ws.registry.champion()
    console.print(f"champion: [bold]{champion}[/bold]")
    metrics = Table(title="gate metrics per cycle")
    metrics.add_column("metric")
    for n in outs:
        metrics.add_column(f"cycle {n}")
    names = sorted({k for o in outs.values() if o.get("evaluation_card") for k in o["evaluation_card"].metrics})
    for name in names:
        row = []
        for o in outs.values():
            value = o["evaluation_card"].metrics.get(name) if o.get("evaluation_card") else None
            row.append("-" if value is None else f"{value:.3f}")
        metrics.add_row(name, *row)
    console.print(metrics)
    stage_times = Table(title="timings (s)")
    stage_times.add_column("stage")
    stage_times.add_column("seconds", justify="right")
    for name, secs in timings.items():
        stage_times.add_row(name, f"{secs:.1f}")
    for n, o in outs.items():
        for asset, value in o.items():
            if value is not None:
                stage_times.add_row(f"  cycle {n} / {asset}", f"{value.seconds:.1f}")
    console.print(stage_times)
    verify = ws.log.verify()
    console.print(f"evaluation cards: {ws.home / 'cards'}")
    console.print(f"change log: {ws.home / 'changelog.jsonl'} ({verify.n_events} events, verify: {'OK' if verify.ok else 'BROKEN'})")
    console.print(f"peak memory: {peak_memory_mib():.0f} MiB")
    rel1, rel2, rel3 = (outs[n].get("release") for n in (1, 2, 3))
    story = {
        "cycle 1 promoted": rel1 is not None and rel1.status == "champion",
        "cycle 2 is champion": champion is not None and rel2 is not None and champion == rel2.release_id,
        "cycle 3 rejected by a gate": rel3 is not None and rel3.status == "rejected" and not rel3.passed,
        "forget request verified": ws.requests.get("req-demo-0001").state == "verified",
        "change log verifies": verify.ok,
    }
    for name, ok in story.items():
        console.print(f"  {'[green]✓' if ok else '[red]✗'}[/] {name}")
    return 0 if all(story.values()) else 1
