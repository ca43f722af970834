"""A forget request's state has one owner: `pipelines/forget/lifecycle.py` is the only module that calls the
request store's `transition`, and only the store itself assigns a request row's `state`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OWNER = Path("pipelines/forget/lifecycle.py")
STORE = Path("pipelines/state/requests/store.py")


def _sources() -> list[Path]:
    return sorted(p.relative_to(ROOT) for d in ("pipelines", "assets", "memgov", "evals")
                  for p in (ROOT / d).rglob("*.py"))


def _writers(path: Path) -> list[str]:
    """Where a module calls `.transition(...)` or assigns something's `.state`, as 'file:line what'."""
    tree = ast.parse((ROOT / path).read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "transition":
            found.append(f"{path}:{node.lineno} calls transition")
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AugAssign | ast.AnnAssign) else []
        found += [f"{path}:{node.lineno} assigns .state" for t in targets
                  if isinstance(t, ast.Attribute) and t.attr == "state"]
    return found


def test_only_the_lifecycle_module_changes_a_requests_state():
    calls = {p: _writers(p) for p in _sources()}
    assert any("calls transition" in w for w in calls[OWNER]), "the owner is found by the scan"
    assert calls[STORE] and all("assigns .state" in w for w in calls[STORE]), "the store sets the column"
    others = [w for p, ws in calls.items() if p not in (OWNER, STORE) for w in ws]
    assert others == [], "a request's state changes only through pipelines/forget/lifecycle.py:\n" + "\n".join(others)


def test_the_scan_finds_writers_it_was_not_told_about(tmp_path):
    rogue = tmp_path / "rogue.py"
    rogue.write_text("def sneak(ws, rid, row):\n    ws.requests.transition(rid, 'verified')\n    row.state = 'verified'\n")
    assert sorted(_writers(rogue)) == [f"{rogue}:2 calls transition", f"{rogue}:3 assigns .state"]
