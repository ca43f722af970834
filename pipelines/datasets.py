"""Row tables (admitted data, quarantine, replay buffer, documents) kept as JSONL blobs in the artifact store.

Each table is a pointer document ``datasets/<table>.json`` mapping a part name (usually a batch) to the
digest of its JSONL blob. Appending a part writes a new blob and moves the pointer; scrubbing rewrites
every part without the matching rows and deletes the old blobs, so deleted rows survive nowhere.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

TABLES = ("admitted", "quarantine", "replay", "documents", "selections")


def _encode(rows: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in rows).encode()


def _decode(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.decode().splitlines() if line.strip()]


@dataclass
class ScrubReport:
    rows_removed: dict[str, int] = field(default_factory=dict)
    blobs_deleted: list[str] = field(default_factory=list)
    legal_holds: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"rows_removed": self.rows_removed, "blobs_deleted": self.blobs_deleted, "legal_holds": self.legal_holds}


class DataStore:
    """Named row tables on top of an ArtifactStore."""

    def __init__(self, store) -> None:
        self.store = store

    def _key(self, table: str) -> str:
        if table not in TABLES:
            raise ValueError(f"unknown table '{table}'; tables are: {', '.join(TABLES)}")
        return f"datasets/{table}.json"

    def parts(self, table: str) -> dict[str, str]:
        return dict(self.store.read_json(self._key(table), default={}))

    def put_part(self, table: str, part: str, rows: list[dict[str, Any]]) -> str:
        """Write (or replace) one part; the replaced blob is deleted when no other part uses it."""
        digest = self.store.put_bytes(_encode(rows))
        parts = self.parts(table)
        old = parts.get(part)
        parts[part] = digest
        self.store.write_json(self._key(table), parts)
        if old and old != digest and old not in self._all_digests():
            self.store.delete_blob(old)
        return digest

    def rows(self, table: str, part: str | None = None) -> list[dict[str, Any]]:
        parts = self.parts(table)
        names = [part] if part is not None else list(parts)
        out: list[dict[str, Any]] = []
        for name in names:
            if name in parts:
                out.extend(_decode(self.store.get_bytes(parts[name])))
        return out

    def snapshot(self, table: str) -> str:
        """Content hash of a table's current state: what a release records as its data snapshot."""
        blob = json.dumps(self.parts(table), sort_keys=True).encode()
        return "sha256:" + hashlib.sha256(blob).hexdigest()

    def _all_digests(self) -> set[str]:
        return {d for t in TABLES for d in self.store.read_json(f"datasets/{t}.json", default={}).values()}

    def scrub(self, matches: Callable[[dict[str, Any]], bool], dry_run: bool = False) -> ScrubReport:
        """Remove every matching row from every table; old blobs are deleted (every version on S3)."""
        report = ScrubReport()
        stale: list[str] = []
        for table in TABLES:
            parts = self.parts(table)
            changed = False
            for name, digest in list(parts.items()):
                rows = _decode(self.store.get_bytes(digest))
                keep = [r for r in rows if not matches(r)]
                removed = len(rows) - len(keep)
                if not removed:
                    continue
                report.rows_removed[f"{table}/{name}"] = removed
                if dry_run:
                    continue
                parts[name] = self.store.put_bytes(_encode(keep))
                stale.append(digest)
                changed = True
            if changed:
                self.store.write_json(self._key(table), parts)
        live = self._all_digests()
        for digest in dict.fromkeys(stale):
            if digest in live:
                continue
            result = self.store.delete_blob(digest)
            report.blobs_deleted.append(digest)
            holds = getattr(result, "legal_hold", None) or []
            report.legal_holds.extend({"blob": digest, "detail": h} for h in holds)
        return report
