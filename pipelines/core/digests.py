"""Content digests: one byte string per JSON value and one sha256 per blob or folder, so equal content always has
the same address in any store, and a checkpoint can be fingerprinted before anything is stored."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, BinaryIO

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
DIR_KIND = "memgov.dir/v1"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def digest_of_stream(fh: BinaryIO) -> str:
    """The digest `digest_of` gives the rest of an open binary file, read in chunks rather than held whole."""
    return "sha256:" + hashlib.file_digest(fh, "sha256").hexdigest()


def digest_of_file(path: Path) -> str:
    with open(path, "rb") as fh:
        return digest_of_stream(fh)


def canonical_json(obj: Any) -> bytes:
    """One byte string per value, so equal content always hashes to the same digest."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def dir_entries(path: Path) -> list[tuple[str, Path]]:
    """Files under `path` as (posix relative path, absolute path), sorted; links are refused, not followed."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path} is not a folder; put_dir needs an existing directory")
    out = []
    for p in sorted(path.rglob("*")):
        if p.is_symlink():
            raise ValueError(f"{p} is a symbolic link; replace it with a regular file before storing the folder")
        if p.is_file():
            out.append((p.relative_to(path).as_posix(), p))
    return out


def dir_manifest(files: list[dict]) -> dict:
    return {"kind": DIR_KIND, "files": sorted(files, key=lambda f: f["path"])}


def dir_digest(path: Path) -> str:
    """The digest `put_dir` would return for this folder, computed without storing anything."""
    files = [
        {"path": rel, "digest": digest_of(p.read_bytes()), "size": p.stat().st_size} for rel, p in dir_entries(path)
    ]
    return digest_of(canonical_json(dir_manifest(files)))
