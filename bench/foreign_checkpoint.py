"""One governed cycle on a checkpoint memgov did not build: a 2-layer Llama written with `save_pretrained`, with a
byte-level BPE tokenizer trained on general text, that knows 40 facts of its domain. Measures `memgov init` and
`memgov run` (each stage's seconds from the Dagster run, the gate metrics, peak memory of each command).

Run: `python -m bench.foreign_checkpoint` (writes RESULTS_foreign_checkpoint.md next to this file).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # the checkpoint and data builders the end-to-end test uses

STAGES = ("admitted_batch", "selected_samples", "candidate_update", "candidate_model", "candidate_index",
          "evaluation_card", "release")


def _memgov(home: Path, policy: Path, *args: str) -> tuple[subprocess.CompletedProcess, float, float]:
    env = {**os.environ, "MEMGOV_HOME": str(home), "MEMGOV_POLICY": str(policy), "COLUMNS": "200"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "memgov", *args], capture_output=True, text=True, env=env)
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    return proc, time.perf_counter() - t0, peak


def _stage_seconds(home: Path) -> dict[str, float]:
    from dagster import DagsterEventType, DagsterInstance, EventRecordsFilter

    os.environ["DAGSTER_HOME"] = str(home / "dagster")
    instance = DagsterInstance.get()
    out: dict[str, float] = {}
    for record in instance.get_event_records(EventRecordsFilter(event_type=DagsterEventType.ASSET_MATERIALIZATION)):
        mat = record.event_log_entry.dagster_event.event_specific_data.materialization
        seconds = mat.metadata.get("seconds")
        if seconds is not None:
            out[mat.asset_key.to_user_string()] = float(seconds.value)
    return out


def main() -> None:
    from support_byo import domain_fact, trained_checkpoint, write_data_dir

    tmp = Path(tempfile.mkdtemp(prefix="memgov-foreign-"))
    checkpoint = trained_checkpoint(tmp / "llama", "llama", [domain_fact(i) for i in range(40)])
    data = write_data_dir(tmp / "data", range(40), range(120, 150))
    raw = yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())
    raw["version"] = "bench-foreign"
    raw["approval"].update(mode="auto", auto_approver="policy:bench")
    raw["update"]["params"].update(max_epochs=80, target_recall=1.0)
    policy = tmp / "policy.yaml"
    policy.write_text(yaml.safe_dump(raw))
    home = tmp / "home"
    init, init_s, init_mem = _memgov(home, policy, "init", "--base-model", str(checkpoint), "--data", str(data))
    assert init.returncode == 0, init.stdout + init.stderr
    (home / "inbox").mkdir(exist_ok=True)
    rows = [domain_fact(i) for i in range(60, 72)]
    (home / "inbox" / "b001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run, run_s, run_mem = _memgov(home, policy, "run")
    card = json.loads((home / "cards" / "r0002" / "card.json").read_text())
    stages = _stage_seconds(home)
    lines = ["# One cycle on a foreign checkpoint (Llama layout, 2 layers, BPE tokenizer)", "",
             "`python -m bench.foreign_checkpoint` on 2 CPU cores; one run, wall-clock seconds.", "",
             f"- `memgov init`: {init_s:.1f} s, peak RSS {init_mem:.0f} MiB",
             f"- `memgov run`: {run_s:.1f} s (exit {run.returncode}), peak RSS {run_mem:.0f} MiB", "",
             "| stage | seconds |", "|---|---:|", *(f"| {s} | {stages.get(s, float('nan')):.2f} |" for s in STAGES), "",
             "| gate | value | champion | verdict |", "|---|---:|---:|---|"]
    for v in card["decision"]["verdicts"]:
        value = "n/a" if v["value"] is None else f"{v['value']:.3f}"
        champ = "n/a" if v.get("champion_value") is None else f"{v['champion_value']:.3f}"
        lines.append(f"| {v['metric']} | {value} | {champ} | {'pass' if v['passed'] else 'FAIL'} |")
    text = "\n".join(lines) + "\n"
    (Path(__file__).parent / "RESULTS_foreign_checkpoint.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
