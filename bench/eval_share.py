"""Wall time of evaluation as a share of a cycle, from one real cycle on the embedded default."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.results import markdown_table, write_result


def run() -> list[dict]:
    from assets.runner import run_cycle
    from memgov.demo.deployment import deploy_demo
    from memgov.report import cycle_outputs
    from pipelines.deployment.workspace import Workspace
    from policies import load_policy

    os.environ["MEMGOV_POLICY"] = "demo"
    cache = Path(".memgov/models").resolve()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "memgov"
        home.mkdir()
        cache.mkdir(parents=True, exist_ok=True)
        os.symlink(cache, home / "models")
        ws = Workspace.open(home)
        policy = load_policy("demo")
        deploy_demo(ws, policy, progress=False)
        for _ in range(2):
            outs = cycle_outputs(run_cycle(ws))
            seconds = {k: v.seconds for k, v in outs.items() if v is not None}
            total = sum(seconds.values())
            rows.append({"cycle": outs["admitted_batch"].cycle, "cycle s": total,
                         "evaluation s": seconds.get("evaluation_card", 0.0),
                         "evaluation share": seconds.get("evaluation_card", 0.0) / total})
    return rows


def main() -> None:
    write_result("eval_share", "Evaluation as a share of a cycle", markdown_table(run()), "python -m bench.eval_share")


if __name__ == "__main__":
    main()
