"""`memgov status` and `memgov forget status ID` with 10,000 forget requests on file (SQLite request store): the
commands' own time in process (median of repeats) and the wall time of the real command (interpreter start
included), side by side with the same commands on a store holding 10 requests."""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.results import markdown_table, write_result


def _fill(home: Path, n: int) -> float:
    """n requests through the store's own API, then a mix of states; returns the seconds filling took."""
    from sqlalchemy import text

    from pipelines.deployment.workspace import Workspace
    from pipelines.state.requests import ForgetRequest

    ws = Workspace.open(home)
    now = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    for i in range(n):
        ws.requests.submit(ForgetRequest(request_id=f"req-{i:05d}", requester="privacy-office",
                                         selector={"subject_ids": [f"s{i:05d}"]}, reason="erasure",
                                         legal_basis="gdpr_art17", deadline=now + dt.timedelta(days=1 + i % 60)))
    with ws.requests.engine.begin() as conn:
        for k, state in enumerate(("planned", "applied", "verified")):
            conn.execute(text("UPDATE forget_requests SET state = :s WHERE CAST(substr(request_id, 5) AS INTEGER) "
                              "% 4 = :k"), {"s": state, "k": k + 1})
    return time.perf_counter() - t0


def _in_process(home: Path, args: list[str], repeats: int) -> float:
    from typer.testing import CliRunner

    from memgov.cli import app

    runner, times = CliRunner(), []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = runner.invoke(app, [*args, "--home", str(home)])
        times.append(time.perf_counter() - t0)
        assert out.exit_code == 0, out.output
    return sorted(times)[len(times) // 2]


def _wall(home: Path, args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "memgov", *args, "--home", str(home)], check=True, capture_output=True)
    return time.perf_counter() - t0


def run(sizes: tuple[int, ...] = (10, 10_000), repeats: int = 5) -> list[dict]:
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp) / "home"
            fill_s = _fill(home, n)
            for args in (["status"], ["forget", "status", f"req-{n // 2:05d}"]):
                rows.append({"requests on file": n, "command": "memgov " + " ".join(args[:2]),
                             "in process s (median)": round(_in_process(home, args, repeats), 3),
                             "wall s (with interpreter start)": round(_wall(home, args), 2),
                             "filling s": round(fill_s, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = run(repeats=args.repeats)
    write_result("status_load", "Status commands with 10,000 forget requests on file", markdown_table(rows),
                 "python -m bench.status_load")


if __name__ == "__main__":
    main()
