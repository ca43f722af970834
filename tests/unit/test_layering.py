"""Layers point one way, and the engine is general: checked on the import graph, with no exemptions.

Engine packages (pipelines/, evals/ outside bench/, policies/) never import Dagster, the wiring (assets/) or the
clients (memgov/: the CLI and the demo world). Benchmarks under evals/bench/ are clients like the CLI: they may
drive whole cycles and build demo worlds. Inside pipelines/, each package imports only the packages below it.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = {"dagster", "dagster_webserver", "assets", "memgov"}
WORLD_WORDS = ("generate_world", "build_tokenizer", "demo.world", "demo.model")


def _imports(path: Path) -> set[str]:
    """Full dotted names of every absolute import in a file, including those inside functions."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _engine_files() -> list[Path]:
    files = [p for folder in ("pipelines", "evals", "policies") for p in (ROOT / folder).rglob("*.py")]
    return [p for p in files if not p.is_relative_to(ROOT / "evals" / "bench")]


def test_engine_never_imports_dagster_wiring_or_clients():
    offenders = {}
    for path in _engine_files():
        bad = {n for n in _imports(path) if n.split(".")[0] in CLIENTS}
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def test_engine_knows_nothing_of_the_demo_world():
    """No demo vocabulary in the engine's code, and no `world` package left inside it."""
    assert not list((ROOT / "pipelines").rglob("world/*.py"))
    offenders = {str(p.relative_to(ROOT)): w for p in _engine_files() for w in WORLD_WORDS if w in p.read_text()}
    assert offenders == {}


def _unit(module: str) -> str | None:
    """The layer a module belongs to: a subpackage or top-level module of pipelines/ or evals/, or policies."""
    parts = module.split(".")
    if parts[0] == "policies":
        return "policies"
    if parts[0] in ("pipelines", "evals") and len(parts) > 1:
        return ".".join(parts[:2])
    return None


def _layer_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in _engine_files():
        me = _unit(".".join(path.relative_to(ROOT).with_suffix("").parts))
        if me is None:
            continue
        graph.setdefault(me, set())
        graph[me] |= {u for u in map(_unit, _imports(path)) if u and u != me}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more layers (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_engine_layers_form_no_cycle():
    assert _cycles(_layer_graph()) == []


def test_the_cycle_finder_sees_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_rule_checker_sees_a_violation(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("def f():\n    from dagster import asset\n    import memgov.demo.world\n")
    assert {"dagster", "memgov.demo.world"} <= _imports(sample)
