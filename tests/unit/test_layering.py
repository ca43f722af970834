"""House rule: engines never import Dagster or the wiring, so they can be tested and reused on their own."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_engines_never_import_dagster_or_assets():
    offenders = {}
    for folder in ("pipelines", "evals", "policies"):
        for path in (ROOT / folder).rglob("*.py"):
            if path.is_relative_to(ROOT / "evals" / "bench"):
                continue  # benchmarks drive whole cycles end to end, through the same runner the CLI uses
            bad = _imports(path) & {"dagster", "assets", "memgov", "dagster_webserver"}
            if bad:
                offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def test_the_rule_checker_sees_a_violation(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("def f():\n    from dagster import asset\n")
    assert "dagster" in _imports(sample)
