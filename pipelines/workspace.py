"""One handle on the durable state of a memgov deployment: artifact store, change log, registry, requests, data.

Local default: everything under MEMGOV_HOME (./.memgov). Production: MEMGOV_STORE=s3://bucket/prefix (with
MEMGOV_S3_ENDPOINT for any S3-compatible endpoint) and MEMGOV_REQUESTS_URL=postgresql+psycopg://… .
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from pipelines.datasets import DataStore
from pipelines.ledger import ChangeLog
from pipelines.registry import Registry
from pipelines.requests import RequestStore
from pipelines.store import ArtifactStore, open_store


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
        mirror = self.store if self.store_url.startswith("s3://") else None
        return ChangeLog(self.home / "changelog.jsonl", mirror=mirror)

    @cached_property
    def registry(self) -> Registry:
        return Registry(self.store, self.log)

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
        return self.home / "inbox"

    @property
    def models_cache(self) -> Path:
        return self.home / "models"

    @property
    def work_dir(self) -> Path:
        path = self.home / "work"
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"
