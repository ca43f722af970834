"""A process that opens a second home still loads metric modules it has not loaded yet (the demo, then a test)."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import os, sys
from evals.metrics import load_metric
os.environ["MEMGOV_HOME"] = sys.argv[1]
load_metric("fact_recall")
os.environ["MEMGOV_HOME"] = sys.argv[2]
load_metric("log_likelihood")
print("loaded")
"""


def test_a_metric_first_loaded_after_the_home_changed_is_found(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "a"), str(tmp_path / "b")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0 and "loaded" in proc.stdout, proc.stderr[-2000:]
