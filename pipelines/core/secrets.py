"""Where a deployment's secrets live: never in MEMGOV_HOME, so whoever can write the data cannot sign.

The system key (seals status records, the champion pointer and the log's head), the UI secret (seals sessions and
run identities) and the log witness sit in one folder outside the home: MEMGOV_SECRETS, by default the home's
sibling `<home>.secrets` (mode 700, each file mode 600). Production mounts them from Kubernetes Secrets instead:
MEMGOV_SYSTEM_KEY and MEMGOV_UI_SECRET_FILE name the files, read-only; then no witness is written and the S3
mirror anchors the log.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class SecretsError(ValueError):
    """A secrets folder or file in the wrong place or with the wrong mode; the message names the fix."""


def secrets_dir(home: Path) -> Path:
    home = Path(home).resolve()
    folder = Path(os.environ.get("MEMGOV_SECRETS") or home.with_name(home.name + ".secrets")).resolve()
    if folder == home or folder.is_relative_to(home):
        raise SecretsError(f"MEMGOV_SECRETS ({folder}) is inside MEMGOV_HOME ({home}): secrets must live outside "
                           "the data, or whoever can write the home can sign; point it elsewhere")
    return folder


def ensure_dir(home: Path) -> Path:
    """The secrets folder, created mode 700 on first use."""
    folder = secrets_dir(home)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def system_key_path(home: Path) -> Path:
    return Path(os.environ.get("MEMGOV_SYSTEM_KEY") or secrets_dir(home) / "system.key")


def ui_secret_path(home: Path) -> Path:
    return Path(os.environ.get("MEMGOV_UI_SECRET_FILE") or secrets_dir(home) / "ui.secret")


def lineage_key_path(home: Path) -> Path:
    """The key lineage ids are hashed under, once the system key has been rotated (before: derived from it)."""
    return Path(os.environ.get("MEMGOV_LINEAGE_KEY") or system_key_path(home).with_name("lineage.key"))


def witness_path(home: Path) -> Path | None:
    """The log witness's file; None where the secrets are mounted read-only (the mirror anchors the log there)."""
    if os.environ.get("MEMGOV_SYSTEM_KEY") and not os.environ.get("MEMGOV_SECRETS"):
        return None
    return secrets_dir(home) / "log.witness"


def legacy_problem(home: Path) -> str | None:
    """A system key left inside the home by an older memgov: refused with the move that fixes it."""
    old = Path(home) / "keys" / "system.key"
    if old.exists() and not os.environ.get("MEMGOV_SYSTEM_KEY"):
        return (f"{old} is a system key inside the home, where whoever can write the data could sign with it: move it "
                f"with `mkdir -m 700 -p {secrets_dir(home)} && mv {old} {secrets_dir(home)}/system.key`")
    return None


def check_private(path: Path) -> None:
    """A secret anyone on the host may read is refused: its mode is part of keeping it secret. (Group access is
    allowed: a Kubernetes Secret reaches the pod's user through its fsGroup, mode 0440.)"""
    mode = path.stat().st_mode
    if mode & stat.S_IRWXO:
        raise SecretsError(f"{path} is readable by others (mode {stat.S_IMODE(mode):o}); `chmod 600 {path}`")


def write_private(path: Path, data: bytes) -> None:
    """Create or replace a secret file atomically, mode 600."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)
