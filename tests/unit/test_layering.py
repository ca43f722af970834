"""Layers point one way, and the engine is general: checked on the import graph (relative imports resolved, imports
inside functions included), with no exemptions.

LAYERS lists every unit of the code, bottom first: a unit may import units of its own tier's lower tiers only, and
nothing above it. The engine (pipelines/, evals/, policies/) never imports Dagster; the wiring (assets/), the clients
(memgov/: the CLI, the UI pages, the demo world) and the benchmarks (bench/: they drive whole cycles) sit on top. No
module anywhere imports itself back through others (no cycle between modules).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipelines", "evals", "policies", "assets", "memgov", "bench")
WORLD_WORDS = ("generate_world", "build_tokenizer", "demo.world", "demo.model")
DAGSTER = {"dagster", "dagster_webserver", "dagster_graphql"}

# Bottom first. A unit is a layer package of pipelines/ (its folder is its layer), a module of evals/, or a whole
# top-level package.
LAYERS: list[tuple[str, set[str]]] = [
    ("core: foundations, no memgov imports", {
        "pipelines.core", "evals.names", "evals.metrics",
        "pipelines"}),  # the package's own __init__ (a docstring)
    ("model: causal-LM helpers; the card, gates and continual metrics", {
        "pipelines.model", "evals.card", "evals.continual", "evals.gates",
        "evals"}),  # evals/__init__ re-exports names
    ("state: stores, change log, request store, inbox, row tables; model probes", {"pipelines.state", "evals.probe"}),
    ("data: admission and retrieval; the metric suites", {"pipelines.data", "evals.suites"}),
    ("methods: selection, update, edit, merge, unlearning plugins; the policy schema", {"pipelines.methods", "policies"}),
    ("trust: keys, keyring, signed decisions", {"pipelines.trust"}),
    ("deployment: registry, workspace, artifacts, evaluation sets, key rotation", {"pipelines.deployment"}),
    ("forget: forget requests", {"pipelines.forget"}),
    ("governance: approvals, promotion, rollback, policy in force, init, releases view", {"pipelines.governance"}),
    ("cycle: the stages of a cycle", {"pipelines.cycle"}),
    ("Dagster wiring", {"assets"}),
    ("clients: CLI, UI pages, demo", {"memgov"}),
    ("benchmarks", {"bench"}),
]
TIER = {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}
ENGINE_TOP = TIER["pipelines.cycle"]


def module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, module: str | None = None) -> set[str]:
    """Full dotted names of every import in a file, relative ones resolved against `module` (the file's own)."""
    module = module or module_of(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            names.add(".".join([*base, *([node.module] if node.module else [])]))
            if node.module is None:  # `from . import x`: x is a module of the package
                names |= {".".join([*base, a.name]) for a in node.names}
    return names


def unit_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] in ("pipelines", "evals") and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0] if parts[0] in PACKAGES else None


def files() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def upward(path: Path, module: str | None = None) -> list[str]:
    """Imports of this file that reach a higher tier than its own, or Dagster from the engine."""
    me = unit_of(module or module_of(path))
    problems = []
    for name in sorted(imports(path, module)):
        if name.split(".")[0] in DAGSTER and TIER[me] <= ENGINE_TOP:
            problems.append(f"{name} (the engine never imports Dagster)")
        target = unit_of(name)
        if target and target != me and TIER.get(target, len(LAYERS)) >= TIER[me]:
            problems.append(f"{name} ({LAYERS[TIER.get(target, 0)][0] if target in TIER else 'unlisted'})")
    return problems


def test_every_unit_is_listed_in_a_layer():
    units = {unit_of(module_of(p)) for p in files()}
    assert units - set(TIER) == set(), "add new packages to LAYERS, in the tier their imports allow"
    assert len(TIER) == sum(len(u) for _, u in LAYERS), "a unit is in one tier only"


def test_every_import_points_down():
    offenders = {str(p.relative_to(ROOT)): bad for p in files() if (bad := upward(p))}
    assert offenders == {}


def test_the_checker_sees_an_upward_import_absolute_or_relative(tmp_path):
    sample = tmp_path / "x.py"
    sample.write_text("from ..cycle import governance\nfrom . import scrub\n\ndef f():\n    import dagster\n"
                      "    from memgov.demo import world\n")
    found = upward(sample, "pipelines.forget.x")
    assert found == ["dagster (the engine never imports Dagster)", "memgov.demo (clients: CLI, UI pages, demo)",
                     "pipelines.cycle (cycle: the stages of a cycle)"], found
    assert "pipelines.forget.scrub" in imports(sample, "pipelines.forget.x"), "a relative import resolves"


def test_engine_knows_nothing_of_the_demo_world():
    """No demo vocabulary in the engine's code, and no `world` package left inside it."""
    assert not list((ROOT / "pipelines").rglob("world/*.py"))
    engine = [p for p in files() if TIER[unit_of(module_of(p))] <= ENGINE_TOP]
    offenders = {str(p.relative_to(ROOT)): w for p in engine for w in WORLD_WORDS if w in p.read_text()}
    assert offenders == {}


def _module_graph() -> dict[str, set[str]]:
    known = {module_of(p): p for p in files()}
    graph: dict[str, set[str]] = {}
    for module, path in known.items():
        targets = set()
        for name in imports(path, module):
            while name and name not in known:  # `from a.b import f` names a.b; `import a.b.c` a module
                name = name.rpartition(".")[0]
            if name and name != module and not module.startswith(name + "."):  # a package's own __init__
                targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more nodes (Tarjan), each sorted."""
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


def test_no_module_imports_itself_back():
    assert cycles(_module_graph()) == []


def test_the_cycle_finder_sees_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
