"""Shared test setup: offline Hugging Face libraries, one cached tiny base model, one demo deployment per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODEL_CACHE = ROOT / ".memgov" / "models"  # cached by config hash, shared with `make demo`

for var in ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ[var] = "1"
os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_MODULES_CACHE", str(ROOT / ".memgov" / "hf_modules"))
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:  # parallel workers share the cores: one worker's torch (and its subprocesses') must not claim them all
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // WORKERS))


# Tests on the demo deployment, in two units of work: under `pytest -n` each unit stays on one worker, the demo is
# built once for both (see `demo_home`), and the two run side by side (one alone would be the suite's critical path).
# The two tests on a candidate waiting for approval (browser, GraphQL) share one unit, so its urgent unlearning run
# is built once and no worker waits on another's build.
DEMO_UNITS = {
    "demo-ui": frozenset({
        "tests/ui/test_approval_ui.py",
        "tests/integration/test_graphql_approval.py",
        "tests/e2e/test_demo_story.py",
        "tests/integration/test_releases_view.py",
    }),
    "demo-decisions": frozenset({
        "tests/e2e/test_forget_outcomes.py",
        "tests/integration/test_governance.py",
        "tests/integration/test_signed_decisions.py",
    }),
}
DEMO_OF = {module: unit for unit, modules in DEMO_UNITS.items() for module in modules}


def scope_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its module, or its demo unit for modules on the demo deployment."""
    module = nodeid.split("::", 1)[0]
    return DEMO_OF.get(module, module)


def pytest_collection_modifyitems(items) -> None:
    """A test on the demo outside DEMO_UNITS would hold a third worker waiting on the demo build and take one more
    copy (and waiting-candidate snapshot) of its own: say where it goes."""
    for item in items:
        if "demo_home" in getattr(item, "fixturenames", ()) and (module := scope_of(item.nodeid)) not in DEMO_UNITS:
            raise pytest.UsageError(f"{item.nodeid} uses the demo deployment: add {module} to one of DEMO_UNITS in "
                                    "tests/conftest.py")


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` means one worker more than cores: tests that wait on a daemon or a subprocess leave a core to the
    others (`--maxprocesses` still caps it)."""
    return (os.cpu_count() or 1) + 1


def pytest_xdist_make_scheduler(config, log):
    """A module's tests stay on one worker (module fixtures are built once); each demo unit counts as one, and they go
    first: they are the longest units of work, so starting them late would leave the other workers idle at the end."""
    from xdist.scheduler import LoadScopeScheduling

    class DemoTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

        def _assign_work_unit(self, node) -> None:
            for unit in DEMO_UNITS:
                if unit in self.workqueue:
                    self.workqueue.move_to_end(unit, last=False)
            super()._assign_work_unit(node)

    return DemoTogether(config, log)


def pytest_sessionstart(session) -> None:
    """Under `pytest -n`, train the demo's base model before the workers start, on every core, so that it is not
    trained by two workers at once on one core each (its lock makes the second wait, but the first would be slow)."""
    config = session.config
    if hasattr(config, "workerinput") or (getattr(config.option, "numprocesses", None) or 0) < 2:
        return
    from memgov.demo.deployment import demo_config
    from memgov.demo.model import ensure_base_model
    from policies import load_policy

    ensure_base_model(MODEL_CACHE, demo_config(load_policy("demo"))[1], progress=False)


def fresh_home(tmp: Path) -> Path:
    """A new state folder that reuses the cached base model (training it is not what these tests test)."""
    home = tmp / "memgov"
    home.mkdir(parents=True)
    MODEL_CACHE.mkdir(parents=True, exist_ok=True)
    os.symlink(MODEL_CACHE, home / "models")
    return home


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory) -> Path:
    """A deployment on which the whole demo story has run once (3 cycles and a forget request).

    Under `pytest -n` the story runs once per pytest run, not once per demo unit: the first unit to ask builds it in
    the run's shared temporary folder under a lock, and each unit takes its own copy of that pristine build."""
    from support_dagster import copy_deployment

    from pipelines.core.filelock import exclusive

    own = tmp_path_factory.mktemp("demo")
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return _built_demo(own)
    shared = tmp_path_factory.getbasetemp().parent / "demo-built"  # one per pytest run, beside each worker's basetemp
    with exclusive(shared.with_suffix(".lock")):
        if not (shared / "complete").exists():
            shutil.rmtree(shared, ignore_errors=True)  # a build that failed part-way is never reused
            _built_demo(shared)
            (shared / "complete").touch()
    home = copy_deployment(shared / "memgov", own / "memgov")
    os.environ["MEMGOV_HOME"] = str(home)
    return home


def _built_demo(folder: Path) -> Path:
    from rich.console import Console

    from memgov.demo import run_demo

    home = fresh_home(folder)
    os.environ["MEMGOV_HOME"] = str(home)
    code = run_demo(str(home), fresh=False, console=Console(width=160))
    assert code == 0, "the demo story did not hold (see the captured output)"
    return home


@pytest.fixture
def demo_copy(demo_home, tmp_path) -> Path:
    """A private copy of the demo deployment for tests that change state."""
    from support_dagster import copy_deployment

    dest = copy_deployment(demo_home, tmp_path / "memgov")
    os.environ["MEMGOV_HOME"] = str(dest)
    return dest


@pytest.fixture(scope="session")
def postgres(tmp_path_factory):
    """One real PostgreSQL server for the session (started on first use), stopped at the end."""
    import tempfile

    from support_postgres import start_postgres

    root = Path(tempfile.mkdtemp(prefix="memgov-pg-"))  # not under pytest's root-only folder: postgres must enter it
    server = start_postgres(root)
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)
