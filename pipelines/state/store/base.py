"""The artifact-store contract shared by the local-folder and S3 backends.

Blobs are immutable and addressed by their sha256, so a re-run that produces the same bytes is a no-op and a
manifest can never point at changed content. Named documents are the only mutable state; a pointer that must not
move under a concurrent writer is changed with `compare_and_swap` on the document's exact text.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from pipelines.core.digests import (
    DIGEST_RE,
    DIR_KIND,
    canonical_json,
    dir_digest,
    dir_entries,
    dir_manifest,
)

KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*(/[A-Za-z0-9_][A-Za-z0-9._-]*)*$")
_MISSING = object()





def check_digest(digest: str) -> str:
    """Return the hex part; a malformed digest would otherwise become an odd path or object key."""
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise ValueError(f"digest {digest!r} is malformed; expected 'sha256:' followed by 64 lowercase hex digits")
    return digest.split(":", 1)[1]


def check_key(key: str) -> str:
    """Document keys are slash-separated names; no '..', no leading dot or slash, and 'blobs/' is reserved."""
    if not isinstance(key, str) or len(key) > 512 or not KEY_RE.match(key) or ".." in key.split("/"):
        raise ValueError(
            f"document key {key!r} is malformed; use slash-separated parts of letters, digits, '.', '_', '-' "
            "(not starting with '.'), e.g. 'registry/champion'"
        )
    if key == "blobs" or key.startswith("blobs/"):
        raise ValueError(f"document key {key!r} is reserved for blobs; choose another prefix")
    return key






def safe_relpath(rel: str) -> PurePosixPath:
    """Refuse manifest paths that would escape the restore folder."""
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ValueError(f"dir manifest holds unsafe path {rel!r}; the manifest is corrupt or hostile")
    return p


class StoreUnavailable(RuntimeError):
    """The store could not be reached within its bounded retries. Nothing half-written is referred to (a blob is
    complete or absent, a document is replaced whole), so retrying once the store is back is safe."""


@dataclass
class DeleteReport:
    """What `delete_blob` removed and what it could not (e.g. versions under S3 Object Lock)."""

    digest: str
    deleted: list[str] = field(default_factory=list)
    legal_hold: list[dict] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.legal_hold


class ArtifactStore(ABC):
    """Content-addressed blobs, folders stored as manifests of blobs, and named JSON documents."""

    @property
    @abstractmethod
    def uri(self) -> str: ...

    # -- blobs -----------------------------------------------------------------
    @abstractmethod
    def put_bytes(self, data: bytes) -> str: ...

    def put_file(self, path: Path) -> str:
        """Store a file's bytes as a blob (its digest as `put_bytes` would give it); backends that can stream
        override this so a large file (weights, an index snapshot) is never held in memory whole."""
        return self.put_bytes(Path(path).read_bytes())

    @abstractmethod
    def get_bytes(self, digest: str) -> bytes: ...

    @contextlib.contextmanager
    def open_blob(self, digest: str) -> Iterator[BinaryIO]:
        """The blob as a binary file to read from, its hash checked before the first byte is handed out; backends
        that can stream override this so reading a large blob (an index snapshot) needs no copy of it in memory."""
        yield io.BytesIO(self.get_bytes(digest))

    @abstractmethod
    def has(self, digest: str) -> bool: ...

    @abstractmethod
    def delete_blob(self, digest: str) -> DeleteReport: ...

    # -- documents ---------------------------------------------------------------
    @abstractmethod
    def read_text(self, key: str) -> str | None:
        """The document's exact text, or None when absent (the value `compare_and_swap` compares)."""

    @abstractmethod
    def write_text(self, key: str, text: str) -> None: ...

    @abstractmethod
    def list_keys(self, prefix: str = "") -> list[str]: ...

    @abstractmethod
    def delete_key(self, key: str) -> None: ...

    @abstractmethod
    def compare_and_swap(self, key: str, expected: str | None, new: str) -> bool:
        """Atomically replace the document text with `new` only if it still is `expected` (None: absent)."""

    # -- shared on top of the primitives ------------------------------------------
    def write_json(self, key: str, obj: Any) -> None:
        self.write_text(key, json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False))

    def read_json(self, key: str, default: Any = _MISSING) -> Any:
        text = self.read_text(key)
        if text is None:
            if default is _MISSING:
                raise KeyError(f"no document {key!r} in {self.uri}")
            return default
        return json.loads(text)

    def update_json(self, key: str, fn: Callable[[Any], Any], default: Any = None, attempts: int = 100) -> Any:
        """Read-modify-write a JSON document with compare-and-swap, retrying when another writer got there first."""
        for _ in range(attempts):
            old = self.read_text(key)
            new_obj = fn(json.loads(old) if old is not None else default)
            new = json.dumps(new_obj, sort_keys=True, indent=1, ensure_ascii=False)
            if self.compare_and_swap(key, old, new):
                return new_obj
        raise RuntimeError(f"could not update {key!r} after {attempts} attempts: too much contention")

    def put_dir(self, path: Path) -> str:
        files = []
        for rel, p in dir_entries(path):
            files.append({"path": rel, "digest": self.put_file(p), "size": p.stat().st_size})
        return self.put_bytes(canonical_json(dir_manifest(files)))

    def dir_manifest(self, digest: str) -> dict:
        manifest = json.loads(self.get_bytes(digest))
        if not isinstance(manifest, dict) or manifest.get("kind") != DIR_KIND:
            raise ValueError(f"blob {digest} is not a folder manifest (kind {DIR_KIND!r})")
        return manifest

    def blobs_of_dir(self, digest: str, include_manifest: bool = False) -> list[str]:
        """Digests of the folder's files (sorted, unique); with include_manifest, the manifest's digest first."""
        files = sorted({f["digest"] for f in self.dir_manifest(digest)["files"]})
        return [digest, *files] if include_manifest else files

    def get_dir(self, digest: str, dest: Path) -> Path:
        """Restore a stored folder into `dest`; an existing `dest` is accepted only if it already holds exactly it."""
        dest = Path(dest)
        if dest.exists():
            if not dest.is_dir():
                raise ValueError(f"{dest} is a file; restore folder {digest} into a new or empty folder")
            if any(dest.iterdir()):
                if dir_digest(dest) == digest:
                    return dest
                raise ValueError(f"{dest} holds other files than folder {digest}; restore into a new or empty folder")
        manifest = self.dir_manifest(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.restore-"))
        try:
            for f in manifest["files"]:
                target = tmp / safe_relpath(f["path"])
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(self.get_bytes(f["digest"]))
            if dest.exists():
                dest.rmdir()
            tmp.replace(dest)
        except OSError:
            if dest.is_dir() and dir_digest(dest) == digest:  # a concurrent restore finished first
                return dest
            raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return dest
