"""Test support: a real `dagster dev` over a memgov deployment, and a deployment with a release waiting for approval.

`dagster dev` shuts its services down on SIGINT only when it leads its own process group and SIGINT is not ignored,
so it is started in a new session with default signal handlers and the whole group is signalled at teardown; every
wait is bounded so a stuck server fails the test instead of hanging it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUESTER = "privacy-office-ui"  # files the urgent request; never the approver (no self-approval)
APPROVER = "alice"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 20.0

# A process started from a background shell inherits SIGINT as ignored; `dagster dev` maps SIGTERM to SIGINT's
# handler, so it would then ignore both and only SIGKILL would stop it (leaving its run workers behind). Restore the
# default handlers before exec (ignored dispositions survive exec; this is thread-safe, unlike preexec_fn).
_DEFAULT_SIGNALS_THEN_EXEC = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); signal.signal(signal.SIGTERM, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def free_port() -> int:
    """A port the kernel just handed out on loopback (released at once, so `dagster dev` can bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DagsterDev:
    """A running `dagster dev`: its address, process and log file (read it when something fails)."""

    host: str
    port: int
    proc: subprocess.Popen
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log_tail(self, n_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n_chars:]
        except OSError:
            return "(no log)"

    def server_info(self) -> dict | None:
        try:
            with urllib.request.urlopen(f"{self.url}/server_info", timeout=2) as resp:
                return json.loads(resp.read().decode())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def stop(self) -> None:
        """Signal the whole process group (webserver, daemon, code server, run workers); SIGKILL what stays."""
        if self.proc.poll() is not None:
            return
        for sig, wait_s in ((signal.SIGINT, STOP_TIMEOUT_S), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(timeout=wait_s)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # children may outlive the leader: clean up the group too
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def dagster_env(home: Path, policy: str = "default", automation: bool = False) -> dict[str, str]:
    """Environment for a `dagster dev` over `home`: its own instance, state folder and policy; offline. Sensors and
    schedules stay off unless `automation` (a test that wants the daemon to act says so)."""
    env = {**os.environ, "MEMGOV_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"), "MEMGOV_POLICY": policy,
           "PYTHONUNBUFFERED": "1", "MEMGOV_AUTOMATION": "on" if automation else "off"}
    for var in ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env[var] = "1"
    return env


def start_dagster_dev(home: Path, log_dir: Path, policy: str = "default", timeout_s: float = START_TIMEOUT_S,
                      memgov_ui: bool = False, automation: bool = False) -> DagsterDev:
    """Start `dagster dev -m assets.definitions` (or `memgov ui`, the webserver behind memgov's authentication layer)
    on a free loopback port; return once /server_info answers."""
    from assets.runner import DAGSTER_YAML

    instance_yaml = home / "dagster" / "dagster.yaml"  # SQLite storage under home, telemetry off
    if not instance_yaml.exists():
        instance_yaml.parent.mkdir(parents=True, exist_ok=True)
        instance_yaml.write_text(DAGSTER_YAML.format(base=home / "dagster" / "storage"))
    port = free_port()
    log_path = log_dir / f"dagster-dev-{port}.log"
    log = log_path.open("wb")
    cmd = ([sys.executable, "-m", "memgov", "ui", "--port", str(port)] if memgov_ui else
           [sys.executable, "-m", "dagster", "dev", "-m", "assets.definitions", "-h", "127.0.0.1", "-p", str(port)])
    proc = subprocess.Popen(
        [sys.executable, "-c", _DEFAULT_SIGNALS_THEN_EXEC, *cmd],
        cwd=ROOT, env=dagster_env(home, policy, automation), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    log.close()
    server = DagsterDev("127.0.0.1", port, proc, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {proc.returncode}:\n{server.log_tail()}")
        if server.server_info() is not None:
            return server
        time.sleep(0.5)
    server.stop()
    raise TimeoutError(f"dagster dev did not answer /server_info within {timeout_s:.0f} s:\n{server.log_tail()}")


@contextmanager
def dagster_dev(home: Path, log_dir: Path, policy: str = "default", memgov_ui: bool = False,
                automation: bool = False) -> Iterator[DagsterDev]:
    server = start_dagster_dev(home, log_dir, policy, memgov_ui=memgov_ui, automation=automation)
    try:
        yield server
    finally:
        server.stop()


def configure_ui_auth(home: Path, trusted_proxies: list[str] | None = None, local_login: bool = False) -> None:
    """Set the keyring's ui section, signed by its administrator (the gate reads it on every request, so a running
    server sees the change)."""
    from pipelines.deployment.workspace import Workspace
    from pipelines.trust.grants import configure_ui
    from tests.support_keys import admin_key

    ws = Workspace.open(home)
    configure_ui(ws.home, ws.log, admin_key(home), "test setup", trusted_proxies=list(trusted_proxies or []),
                 local_login=local_login)


def grant_ui_user(home: Path, name: str, *roles: str, password: str | None = None) -> None:
    from pipelines.deployment.workspace import Workspace
    from pipelines.trust.grants import grant, set_password
    from tests.support_keys import admin_key

    ws = Workspace.open(home)
    grant(ws.home, ws.log, name, [], list(roles), admin_key(home), "test setup")
    if password:
        set_password(ws.home, ws.log, name, password, admin_key(home))


def wait_for_location(server: DagsterDev, timeout_s: float = 60.0) -> str:
    """The code location's name once it has loaded (the webserver answers before the definitions are in)."""
    query = "{ workspaceOrError { ... on Workspace { locationEntries { name locationOrLoadError { __typename } } } } }"
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        req = urllib.request.Request(f"{server.url}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                last = json.loads(resp.read().decode())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last = str(exc)
            time.sleep(0.5)
            continue
        entries = (((last or {}).get("data") or {}).get("workspaceOrError") or {}).get("locationEntries") or []
        for entry in entries:
            kind = (entry.get("locationOrLoadError") or {}).get("__typename")
            if kind == "RepositoryLocation":
                return entry["name"]
            if kind == "PythonError":
                raise RuntimeError(f"code location {entry['name']} failed to load:\n{server.log_tail()}")
        time.sleep(0.5)
    raise TimeoutError(f"no code location loaded within {timeout_s:.0f} s (last answer: {last}):\n{server.log_tail()}")


def graphql(server: DagsterDev, query: str, variables: dict | None = None) -> dict:
    """A raw GraphQL call, for what the Python client does not expose (a run's failure messages)."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(f"{server.url}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        answer = json.loads(resp.read().decode())
    if answer.get("errors"):
        raise RuntimeError(f"GraphQL errors: {answer['errors']}")
    return answer["data"]


_RUN_FAILURES = """query($runId: ID!) { logsForRun(runId: $runId) { __typename ... on EventConnection { events {
  __typename ... on ExecutionStepFailureEvent { error { message causes { message } } } ... on RunFailureEvent { message }
} } } }"""


def failure_messages(server: DagsterDev, run_id: str) -> list[str]:
    """Every error message of a run's failed steps, causes included (where an op's own exception shows)."""
    events = (graphql(server, _RUN_FAILURES, {"runId": run_id})["logsForRun"] or {}).get("events") or []
    out: list[str] = []
    for event in events:
        if event["__typename"] == "ExecutionStepFailureEvent":
            error = event.get("error") or {}
            out += [error.get("message", "")] + [c.get("message", "") for c in error.get("causes") or []]
        elif event["__typename"] == "RunFailureEvent":
            out.append(event.get("message", ""))
    return out


def wait_for_run(client, run_id: str, timeout_s: float = 120.0) -> str:
    """Poll a run submitted through DagsterGraphQLClient until it ends; returns the final status name."""
    deadline = time.monotonic() + timeout_s
    status = "UNKNOWN"
    while time.monotonic() < deadline:
        status = client.get_run_status(run_id).value
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(0.5)
    raise TimeoutError(f"run {run_id} still {status} after {timeout_s:.0f} s")


def copy_deployment(src: Path, dest: Path) -> Path:
    """A private copy of a deployment; its dagster.yaml is re-pointed at the copy (as the `demo_copy` fixture does).
    Its secrets and its people's keys live beside the home, not in it: they are copied beside the copy."""
    shutil.copytree(src, dest, symlinks=True)
    for suffix in (".secrets", ".demo-keys"):
        beside = src.with_name(src.name + suffix)
        if beside.exists():
            shutil.copytree(beside, dest.with_name(dest.name + suffix), symlinks=True)
    dagster_yaml = dest / "dagster" / "dagster.yaml"
    if dagster_yaml.exists():
        dagster_yaml.write_text(dagster_yaml.read_text().replace(str(src), str(dest)))
    return dest


def other_initial_subject(ws) -> str:
    """A subject of the deployment's initial facts (after the first) that no forget request has covered yet."""
    tomb = ws.requests.tombstones()
    for row in ws.data.rows("admitted", "initial")[1:]:
        if row.get("subject") and not tomb.covers(row):
            return row["subject"]
    raise AssertionError("every initial subject is already forgotten")


def make_waiting_candidate(home: Path, request_id: str = "req-ui-0001") -> str:
    """Under the default policy (human approval), an urgent forget request for another subject yields an
    unlearning-only candidate that passes its gates and waits; returns its release id.

    MEMGOV_HOME, MEMGOV_POLICY and DAGSTER_HOME are process-wide here (the job's resource reads them): they are
    restored afterwards so other tests see what they saw before."""
    from assets.runner import tick_sensor
    from pipelines.deployment.workspace import Workspace
    from pipelines.state.requests import ForgetRequest, Selector

    saved = {k: os.environ.get(k) for k in ("MEMGOV_HOME", "MEMGOV_POLICY", "DAGSTER_HOME")}
    os.environ["MEMGOV_HOME"] = str(home)
    os.environ["MEMGOV_POLICY"] = "default"
    try:
        from support_keys import adopt_policy, keyholder

        from pipelines.forget.filing import file_request, sign_request

        adopt_policy(home, "default")
        ws = Workspace.open(home)
        before = {r.release_id for r in ws.registry.list()}
        req = ForgetRequest(request_id=request_id, requester=REQUESTER, selector=Selector(subject=other_initial_subject(ws)),
                            reason="erasure request, out of cycle", legal_basis="gdpr_art17",
                            deadline=datetime.now(UTC) + timedelta(days=3), urgent=True)
        file_request(ws, req, sign_request(keyholder(home, REQUESTER), req))
        runs = tick_sensor(ws, "forget_request_sensor")
        assert len(runs) == 1, f"the forget-request sensor launched {len(runs)} runs for one new request"
        failures = [e.event_specific_data.error.to_string() for e in runs[0].get_step_failure_events()]
        assert runs[0].success, "the urgent forget run failed:\n" + "\n".join(failures)
        ws = Workspace.open(home)
        new = [r for r in ws.registry.list() if r.release_id not in before]
        assert len(new) == 1, f"expected one new release from the urgent request, got {[r.release_id for r in new]}"
        candidate = new[0]
        assert candidate.status == "candidate", (
            f"urgent release {candidate.release_id} is '{candidate.status}', not waiting for approval"
        )
        return candidate.release_id
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def waiting_candidate(demo_home: Path, home: Path, tmp_path_factory) -> str:
    """`home` (a private copy of `demo_home`) with a candidate waiting for approval; returns the release id.

    The urgent unlearning run costs minutes on two cores, so it runs once per pytest run: the first caller (on any
    worker, under a lock) builds it and snapshots the result beside the shared demo build; every later caller
    restores that snapshot into its own copy, so every test still starts from identical state."""
    from pipelines.core.filelock import exclusive

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # one per pytest run, beside each worker's basetemp (as the demo build is)
    built = shared / "waiting-built"
    with exclusive(built.with_suffix(".lock")):
        if not (built / "release_id").exists():
            shutil.rmtree(built, ignore_errors=True)  # a build that failed part-way is never reused
            release_id = make_waiting_candidate(home)
            copy_deployment(home, built / "memgov")
            (built / "release_id").write_text(release_id)
            return release_id
    for folder in (home, *(home.with_name(home.name + suffix) for suffix in (".secrets", ".demo-keys"))):
        shutil.rmtree(folder, ignore_errors=True)  # the copy's secrets and keys live beside it: replaced too
    copy_deployment(built / "memgov", home)
    return (built / "release_id").read_text()


def decision_config(release_id: str, approver: str = "", role: str = "ml-lead",
                    reason: str = "evaluation card reviewed") -> dict:
    """The approval job's run config; who decides is the signed-in user (`approver`, if given, must be them)."""
    config = {"release_id": release_id, "decision": "approve", "role": role, "reason": reason}
    return {"ops": {"decide_release": {"config": {**config, **({"approver": approver} if approver else {})}}}}
