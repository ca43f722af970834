"""Artifact store in a local folder: blobs under blobs/sha256/, documents at their key's path.

Every write goes to a temporary file first and is moved into place with os.replace, so a crash never leaves a
half-written blob or document. Compare-and-swap holds an flock on a per-key lock file; flock (unlike lockf)
also excludes other threads of the same process, because each call opens its own file description.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pipelines.core.digests import digest_of, digest_of_file, digest_of_stream
from pipelines.core.filelock import exclusive

from .base import ArtifactStore, DeleteReport, check_digest, check_key


class LocalStore(ArtifactStore):
    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        for sub in ("blobs/sha256", ".tmp", ".locks"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    # -- helpers -------------------------------------------------------------------
    def _blob_path(self, digest: str) -> Path:
        hexd = check_digest(digest)
        return self.root / "blobs" / "sha256" / hexd[:2] / hexd

    def _doc_path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _atomic_write(self, target: Path, data: bytes, mode: int | None = None) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root / ".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if mode is not None:
                os.chmod(tmp, mode)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def _locked(self, key: str) -> contextlib.AbstractContextManager[None]:
        return exclusive(self.root / ".locks" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.lock")

    # -- blobs ---------------------------------------------------------------------
    def put_bytes(self, data: bytes) -> str:
        digest = digest_of(bytes(data))
        path = self._blob_path(digest)
        if not path.exists():
            self._atomic_write(path, bytes(data), mode=0o444)
        return digest

    def put_file(self, path: Path) -> str:
        digest = digest_of_file(path)
        target = self._blob_path(digest)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root / ".tmp")
            try:
                with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, 0o444)
                if digest_of_file(tmp) != digest:  # changed while being copied: store nothing rather than a lie
                    raise ValueError(f"{path} changed while it was being stored; store it again once it is written")
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise
        return digest

    def get_bytes(self, digest: str) -> bytes:
        path = self._blob_path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise KeyError(f"blob {digest} is not in {self.uri}") from None
        if digest_of(data) != digest:
            raise ValueError(f"blob {digest} in {self.uri} is corrupt (content hash differs)")
        return data

    @contextlib.contextmanager
    def open_blob(self, digest: str) -> Iterator[BinaryIO]:
        try:
            fh = open(self._blob_path(digest), "rb")  # noqa: SIM115 - handed out, closed below
        except FileNotFoundError:
            raise KeyError(f"blob {digest} is not in {self.uri}") from None
        with fh:
            if digest_of_stream(fh) != digest:
                raise ValueError(f"blob {digest} in {self.uri} is corrupt (content hash differs)")
            fh.seek(0)
            yield fh

    def has(self, digest: str) -> bool:
        return self._blob_path(digest).is_file()

    def delete_blob(self, digest: str) -> DeleteReport:
        path = self._blob_path(digest)
        report = DeleteReport(digest)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            report.deleted.append(str(path))
        return report

    # -- documents -------------------------------------------------------------------
    def read_text(self, key: str) -> str | None:
        path = self._doc_path(key)
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (IsADirectoryError, NotADirectoryError):
            raise ValueError(f"document key {key!r} clashes with a folder of other keys; pick another key") from None

    def write_text(self, key: str, text: str) -> None:
        path = self._doc_path(key)
        with self._locked(key):
            self._write_doc(key, path, text)

    def _write_doc(self, key: str, path: Path, text: str) -> None:
        try:
            self._atomic_write(path, text.encode("utf-8"))
        except (IsADirectoryError, NotADirectoryError, FileExistsError):
            raise ValueError(f"document key {key!r} clashes with a folder of other keys; pick another key") from None

    def list_keys(self, prefix: str = "") -> list[str]:
        keys = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = Path(dirpath).relative_to(self.root).as_posix()
            if rel_dir == ".":
                dirnames[:] = [d for d in dirnames if d != "blobs" and not d.startswith(".")]
                rel_dir = ""
            for name in filenames:
                key = f"{rel_dir}/{name}" if rel_dir else name
                if key.startswith(prefix) and not name.startswith("."):
                    keys.append(key)
        return sorted(keys)

    def delete_key(self, key: str) -> None:
        path = self._doc_path(key)
        with self._locked(key), contextlib.suppress(FileNotFoundError):
            path.unlink()

    def compare_and_swap(self, key: str, expected: str | None, new: str) -> bool:
        path = self._doc_path(key)
        with self._locked(key):
            if self.read_text(key) != expected:
                return False
            self._write_doc(key, path, new)
            return True
