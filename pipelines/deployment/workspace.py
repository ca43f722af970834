"""One handle on the durable state of a memgov deployment: artifact store, change log, registry, requests, data.

Local default: everything under MEMGOV_HOME (./.memgov). Production: MEMGOV_STORE=s3://bucket/prefix (with
MEMGOV_S3_ENDPOINT for any S3-compatible endpoint), MEMGOV_INBOX=s3://bucket/prefix and
MEMGOV_REQUESTS_URL=postgresql+psycopg://… . The change
log's mirror lives apart from the artifacts: MEMGOV_LOG_MIRROR=s3://bucket/prefix, by default the bucket
`<artifact-bucket>-log` (see pipelines/state/ledger/mirror.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pipelines.core import secrets
from pipelines.deployment.registry import Registry
from pipelines.state.ledger import ChangeLog, Witness
from pipelines.state.ledger.mirror import open_log_mirror
from pipelines.state.requests import RequestStore
from pipelines.state.store import ArtifactStore, open_store
from pipelines.state.tables import DataStore


def default_home() -> Path:
    return Path(os.environ.get("MEMGOV_HOME", ".memgov")).resolve()


def configure_offline_env(home: Path) -> None:
    """No hub access at run time: make every Hugging Face library fail fast instead of trying the network."""
    for var in ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("HF_HOME", str(home / "hf"))
    os.environ.setdefault("HF_MODULES_CACHE", str(home / "hf_modules"))
    os.environ.setdefault("MEMGOV_HOME", str(home))


@dataclass
class Workspace:
    home: Path
    store_url: str
    requests_url: str

    @classmethod
    def open(cls, home: str | Path | None = None, store_url: str | None = None, requests_url: str | None = None) -> Workspace:
        root = Path(home).resolve() if home else default_home()
        root.mkdir(parents=True, exist_ok=True)
        configure_offline_env(root)
        store = store_url or os.environ.get("MEMGOV_STORE") or str(root / "artifacts")
        reqs = requests_url or os.environ.get("MEMGOV_REQUESTS_URL") or f"sqlite:///{root / 'requests.db'}"
        return cls(root, store, reqs)

    @cached_property
    def store(self) -> ArtifactStore:
        options = {}
        if self.store_url.startswith("s3://") and os.environ.get("MEMGOV_S3_ENDPOINT"):
            options["endpoint_url"] = os.environ["MEMGOV_S3_ENDPOINT"]
        return open_store(self.store_url, **options)

    @cached_property
    def log(self) -> ChangeLog:
        """Mirrored in its own locked bucket, never in the artifact store: one writer must not hold both.
        MEMGOV_LOG_PRIMARY=mirror (run pods) makes the mirror the primary copy and the home's file its cache.
        Without a mirror, the newest event is witnessed with the secrets (pipelines/state/ledger/witness.py)."""
        mirror = open_log_mirror(self.store_url)
        witness_file = secrets.witness_path(self.home) if mirror is None else None
        witness = Witness(witness_file, lambda: self.system_key) if witness_file is not None else None
        return ChangeLog(self.home / "changelog.jsonl", mirror=mirror, witness=witness,
                         primary=os.environ.get("MEMGOV_LOG_PRIMARY", "").strip() or "local")

    @cached_property
    def registry(self) -> Registry:
        lineage = secrets.lineage_key_path(self.home)
        return Registry(self.store, self.log, signer=self.system_key,
                        lineage_key=lineage.read_bytes() if lineage.exists() else None)

    @cached_property
    def system_key(self):
        """The deployment's signing key, from the secrets folder outside the home (created there on first use)."""
        from pipelines.trust.keyring import system_key

        return system_key(self.home)

    def keyring(self):
        """Read fresh each time: a grant made by `memgov keys grant` takes effect at once."""
        from pipelines.trust.keyring import load

        return load(self.home)

    @cached_property
    def requests(self) -> RequestStore:
        return RequestStore(self.requests_url)

    @cached_property
    def data(self) -> DataStore:
        return DataStore(self.store)

    def deployment(self) -> dict:
        """What `memgov init` recorded about the base checkpoint ({} before init)."""
        return dict(self.store.read_json("deployment.json", default={}) or {})

    @property
    def inbox(self) -> Path:
        """The inbox folder: the inbox itself, or the working copy of the remote one (MEMGOV_INBOX)."""
        return self.home / "inbox"

    @cached_property
    def remote_inbox(self):
        """MEMGOV_INBOX=s3://bucket/prefix: batches wait in a bucket, not on one machine (pipelines/state/inbox.py)."""
        from pipelines.state.inbox import open_remote_inbox

        url = os.environ.get("MEMGOV_INBOX", "").strip()
        return open_remote_inbox(url, self.inbox) if url else None

    def pull_inbox(self) -> Path:
        """The inbox folder, first brought up to date with the remote inbox where there is one."""
        if self.remote_inbox is not None:
            self.remote_inbox.pull()
        return self.inbox

    def inbox_changed(self, path: Path) -> list[dict]:
        """A change memgov made to an inbox file sent to the remote inbox (nothing without one); the versions an
        Object Lock keeps, if any."""
        return self.remote_inbox.push(path).legal_holds if self.remote_inbox is not None else []

    @property
    def models_cache(self) -> Path:
        return self.home / "models"

    @property
    def work_dir(self) -> Path:
        path = self.home / "work"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def secrets_dir(self) -> Path:
        """Where the system key, the UI secret and the log witness live: never inside the home."""
        return secrets.secrets_dir(self.home)

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"
