"""Where batches wait for admission: the home's `inbox/` folder, or with MEMGOV_INBOX=s3://bucket/prefix a prefix
in a bucket, so that no run pod keeps an inbox of its own on its disk.

With a remote inbox the folder is a working copy. `pull` makes it hold the remote's files: changed ones are fetched
(by ETag), ones gone from the bucket are removed, and a file written into the folder that the bucket never had (a
batch dropped on this machine) is sent up. Every change memgov makes to an inbox file (a submission, a scrub, a
tombstoned row leaving its batch) is pushed at once, and every earlier version of the object is deleted: a
forgotten row does not outlive its scrub in the bucket's history.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.state.store.s3 import S3Store

log = logging.getLogger(__name__)
STATE = ".remote.json"  # hidden: the inbox's readers skip hidden names (writers' temporary files, this record)


@dataclass
class Pushed:
    """What a push changed in the bucket: versions deleted and versions an Object Lock keeps."""

    deleted: list[str] = field(default_factory=list)
    legal_holds: list[dict] = field(default_factory=list)


class RemoteInbox:
    def __init__(self, store: S3Store, folder: Path):
        self.store = store
        self.folder = folder

    @property
    def uri(self) -> str:
        return self.store.uri

    def _state(self) -> dict[str, str]:
        try:
            return dict(json.loads((self.folder / STATE).read_text()))
        except (OSError, ValueError):
            return {}

    def _save_state(self, state: dict[str, str]) -> None:
        self._write(self.folder / STATE, json.dumps(state, sort_keys=True).encode())

    def _write(self, target: Path, data: bytes) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".pull-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)

    def _local_files(self) -> list[str]:
        if not self.folder.exists():
            return []
        return sorted(p.relative_to(self.folder).as_posix() for p in self.folder.rglob("*")
                      if p.is_file() and not p.is_symlink()
                      and not any(part.startswith(".") for part in p.relative_to(self.folder).parts))

    def pull(self) -> None:
        """The folder made to hold what the bucket holds (see the module's docstring)."""
        remote, state = self.store.named_files(), self._state()
        for rel, etag in remote.items():
            local = self.folder / rel
            if state.get(rel) != etag or not local.is_file():
                if rel not in state and local.is_file():  # dropped here under a name the bucket already has
                    kept = local.with_name(f".conflict-{int(time.time())}-{local.name}")
                    local.rename(kept)
                    log.warning("inbox file %s was dropped here but %s already holds one by that name; the local one "
                                "is kept as %s (not admitted): submit it under another name", rel, self.uri, kept)
                got = self.store.get_named(rel)
                if got is None:  # removed between the listing and the read
                    continue
                self._write(local, got[0])
                state[rel] = got[1]
        for rel in self._local_files():
            if rel in remote:
                continue
            if rel in state:  # the bucket had it and no longer does: scrubbed or taken elsewhere
                (self.folder / rel).unlink(missing_ok=True)
                state.pop(rel)
            else:  # new here: the bucket gets it
                state[rel], _ = self.store.replace_named(rel, self.folder / rel)
        for rel in [r for r in state if r not in remote and not (self.folder / r).is_file()]:
            state.pop(rel)
        self._save_state(state)

    def push(self, path: Path) -> Pushed:
        """One inbox file's change sent up: its new bytes (every earlier version deleted), or, when the file is
        gone from the folder, the object and all its versions removed."""
        rel = Path(path).resolve().relative_to(self.folder.resolve()).as_posix()
        state = self._state()
        if Path(path).is_file():
            state[rel], report = self.store.replace_named(rel, Path(path))
        else:
            report = self.store.remove_named(rel)
            state.pop(rel, None)
        self._save_state(state)
        return Pushed(deleted=report.deleted, legal_holds=report.legal_hold)


def open_remote_inbox(url: str, folder: Path) -> RemoteInbox:
    """The remote inbox at `url` (s3://bucket/prefix; MEMGOV_S3_ENDPOINT for any S3-compatible endpoint)."""
    if not url.startswith("s3://"):
        raise ValueError(f"MEMGOV_INBOX={url!r}: give s3://bucket/prefix, or leave it unset for the home's inbox folder")
    from pipelines.state.store import open_store

    options = {"endpoint_url": os.environ["MEMGOV_S3_ENDPOINT"]} if os.environ.get("MEMGOV_S3_ENDPOINT") else {}
    store = open_store(url, **options)
    assert isinstance(store, S3Store)
    return RemoteInbox(store, folder)
