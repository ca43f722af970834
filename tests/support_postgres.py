"""A real PostgreSQL server for the tests: Debian's `postgresql` binaries, a cluster in a temporary folder, run by
an unprivileged user (initdb refuses root), listening on a free loopback port. `make test` installs the package
(infra/scripts/ensure-postgres.sh); outside CI a machine without it skips these tests."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

USER = "memgov"


@dataclass(frozen=True)
class Postgres:
    port: int
    bindir: Path
    data: Path
    run_as: list[str]

    def url(self, database: str, driver: str = "psycopg") -> str:
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name)
        return name

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.run_as, str(self.bindir / tool), *args], check=True, capture_output=True, text=True)

    def stop(self) -> None:
        subprocess.run([*self.run_as, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True)


def _bindir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_postgres(root: Path) -> Postgres:
    bindir = _bindir()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but no PostgreSQL binaries under /usr/lib/postgresql: `make test` installs Debian's "
                        "postgresql (infra/scripts/ensure-postgres.sh)")
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql, or run `make test` as root)")
    run_as: list[str] = []
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:  # initdb and postgres refuse to run as root: use the package's unprivileged user
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", _free_port()
    server = Postgres(port, bindir, data, run_as)
    server._run("initdb", "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    server._run("pg_ctl", "-D", str(data), "-o", options, "-l", str(root / "server.log"), "-w", "start")
    return server
