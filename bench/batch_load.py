"""One governed cycle on a large batch: wall time and peak memory of `memgov run`, per stage, at several sizes.

The deployment is a team's own checkpoint (a 2-layer Llama written with `save_pretrained`, as in the foreign
checkpoint benchmark). Each batch mixes what a large feed holds: documents for the index (90 %), facts (5 %) and
rows the contract refuses (5 %: missing text, a disallowed licence, a duplicated id). The child process's resident
memory is sampled every 0.2 s and attributed to the stage running at the time (from the run's step events).

Run: `python -m bench.batch_load [--rows 10000 30000 100000]` (writes RESULTS_batch_load.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from bench.results import markdown_table, write_result

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))  # the checkpoint and data builders the end-to-end tests use

STEP = re.compile(r'Started execution of step "(\w+)"')
WORDS = ("harbour", "market", "orchard", "quarry", "railway", "chapel", "bridge", "mill", "school", "tower")


def batch_rows(n: int, seed: int = 0) -> list[dict]:
    """n contract rows: 90 % documents, 5 % facts, 5 % rows admission must quarantine."""
    from support_byo import domain_fact

    rows = []
    for i in range(n):
        kind = i % 20
        if kind == 0:  # refused: no text, a licence the policy does not allow, or an id used twice
            bad = [{"id": f"bad-{i}", "kind": "document", "source": "feed", "license": "cc0"},
                   {"id": f"bad-{i}", "kind": "document", "text": "Closed for the season.", "source": "feed",
                    "license": "proprietary-no-training"},
                   {"id": "dup-0", "kind": "document", "text": f"Notice {i}.", "source": "feed", "license": "cc0"}]
            rows.append(bad[(i // 20) % 3])
        elif kind == 1:  # a town's place, one of many of its kind (stall i), and the day it opens early
            fact = domain_fact(60 + i % 60)
            prompt = fact["prompt"].replace(" opens early on", f" (stall {i}) opens early on")
            rows.append({**fact, "id": f"fact-b{i:07d}", "fact_id": f"{fact['fact_id']}:{i}", "prompt": prompt,
                         "text": f"{prompt}{fact['target']}.", "paraphrases": []})
        else:
            a, b = WORDS[(i + seed) % len(WORDS)], WORDS[(i * 7 + seed) % len(WORDS)]
            rows.append({"id": f"doc-b{i:07d}", "kind": "document",
                         "text": f"Notice {i}: the {a} near the {b} is open from {6 + i % 5} to {17 + i % 4} today.",
                         "subject_ids": [], "source": "feed", "license": "cc0"})
    return rows


def _sample(pid: int, stop: threading.Event, samples: list[tuple[float, int]]) -> None:
    status = Path(f"/proc/{pid}/status")
    while not stop.is_set():
        try:
            rss = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmRSS"))
        except (OSError, StopIteration):
            return
        samples.append((time.monotonic(), rss // 1024))
        time.sleep(0.2)


def run_cycle(home: Path, policy: Path) -> dict:
    """`memgov run` with its memory sampled; the peak overall and per stage, seconds per stage."""
    env = {**os.environ, "MEMGOV_HOME": str(home), "MEMGOV_POLICY": str(policy), "MEMGOV_LOG_LEVEL": "DEBUG",
           "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "memgov", "run"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    sampler = threading.Thread(target=_sample, args=(proc.pid, stop, samples), daemon=True)
    sampler.start()
    starts, tail = [("startup", t0)], []
    for line in proc.stdout:
        tail = (tail + [line])[-40:]
        match = STEP.search(line)
        if match:
            starts.append((match.group(1), time.monotonic()))
    code = proc.wait()
    stop.set()
    sampler.join()
    end = time.monotonic()
    if code != 0:
        raise RuntimeError(f"memgov run exited {code}:\n{''.join(tail)}")
    bounds = [*starts, ("end", end)]
    stages = {}
    for (name, begin), (_, until) in zip(bounds, bounds[1:], strict=False):
        peak = max((rss for t, rss in samples if begin <= t < until), default=0)
        stages[name] = {"seconds": round(until - begin, 1), "peak_mib": peak}
    return {"seconds": end - t0, "peak_mib": max(rss for _, rss in samples), "stages": stages}


def deployment(tmp: Path) -> tuple[Path, Path]:
    from support_byo import domain_fact, trained_checkpoint, write_data_dir

    checkpoint = trained_checkpoint(tmp / "llama", "llama", [domain_fact(i) for i in range(40)])
    data = write_data_dir(tmp / "data", range(40), range(120, 150))
    raw = yaml.safe_load((ROOT / "policies" / "default.yaml").read_text())
    raw["version"] = "bench-batch-load"
    raw["approval"].update(mode="auto", auto_approver="policy:bench")
    policy = tmp / "policy.yaml"
    policy.write_text(yaml.safe_dump(raw))
    home = tmp / "home"
    env = {**os.environ, "MEMGOV_HOME": str(home), "MEMGOV_POLICY": str(policy)}
    init = subprocess.run([sys.executable, "-m", "memgov", "init", "--base-model", str(checkpoint), "--data",
                           str(data)], cwd=ROOT, env=env, capture_output=True, text=True)
    if init.returncode != 0:
        raise RuntimeError(init.stdout + init.stderr)
    return home, policy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="memgov-batch-load-"))
    base, policy = deployment(tmp)
    results, stage_rows = [], []
    for n in args.rows:
        home = tmp / f"home-{n}"
        shutil.copytree(base, home, symlinks=True)
        (home / "inbox").mkdir(exist_ok=True)
        (home / "inbox" / "b001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in batch_rows(n)))
        got = run_cycle(home, policy)
        results.append({"rows": n, "seconds": round(got["seconds"], 1), "peak MiB": got["peak_mib"],
                        "s per 10k rows": round(got["seconds"] / n * 10_000, 1)})
        for stage, figures in got["stages"].items():
            stage_rows.append({"rows": n, "stage": stage, "seconds": figures["seconds"],
                               "peak MiB": figures["peak_mib"]})
        print(results[-1], flush=True)
    body = ("Whole `memgov run` (one process: in-process executor), peak resident memory sampled every 0.2 s.\n\n"
            + markdown_table(results) + "\nPer stage (peak while that stage ran):\n\n" + markdown_table(stage_rows))
    write_result("batch_load", "A cycle on a large batch: time and peak memory", body,
                 "python -m bench.batch_load --rows " + " ".join(map(str, args.rows)))
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
