"""`memgov ui`: Dagster's webserver app behind memgov's authentication layer, with the daemon beside it.

`dagster dev` would serve the webserver unwrapped, so this builds the same Starlette app in-process
(`create_app_from_workspace_process_context`), wraps it in `GovernanceGate`, and runs the daemon (schedules,
sensors, the run queue) as a child process that stops with it. SIGTERM (what a pod gets before it is killed) stops
everything within a few seconds: open browser connections get SHUTDOWN_GRACE_S to finish, the daemon as long again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHUTDOWN_GRACE_S = 3  # the UI keeps websockets open for ever: graceful shutdown must not wait for them


def _daemon(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dagster._daemon", "run", "-m", "assets.definitions"],
                            cwd=ROOT, env=env)


def serve(home: Path, host: str, port: int) -> int:
    import dagster_webserver
    import uvicorn
    from dagster import DagsterInstance
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import ModuleTarget
    from dagster_webserver.app import create_app_from_workspace_process_context

    from memgov.webauth import GovernanceGate

    daemon = _daemon(dict(os.environ))
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        instance = DagsterInstance.get()
        target = ModuleTarget(module_name="assets.definitions", attribute=None, working_directory=str(ROOT),
                              location_name=None)
        with WorkspaceProcessContext(instance, version=dagster_webserver.__version__, read_only=False,
                                     workspace_load_target=target) as context:
            app = GovernanceGate(create_app_from_workspace_process_context(context), home)
            try:
                uvicorn.run(app, host=host, port=port, log_level="warning",
                            timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
            finally:
                daemon.terminate()  # stops while the code servers shut down, not after them
    except KeyboardInterrupt:
        pass
    finally:
        daemon.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.wait(timeout=2)
        if daemon.poll() is None:
            daemon.kill()
    return 0
