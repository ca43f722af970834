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

from pipelines.core.rows import ContractRow, as_rows

TABLES = ("admitted", "quarantine", "replay", "documents", "selections",
          "eval_retention", "eval_general", "eval_locality", "eval_unseen", "general_replay", "pool_pruned")
# The evaluation tables of the data contract: read by the engine, never invented, scrubbed like every other store.
EVAL_TABLES = {"retention": "eval_retention", "general": "eval_general", "locality": "eval_locality",
               "unseen": "eval_unseen"}
# Tables of rows the deployment supplies for a purpose of their own: never trained on as new data, never indexed.
HELD_TABLES = {**EVAL_TABLES, "general_replay": "general_replay"}
# Tables whose rows are contract rows (admitted as written; a selection adds its role, cluster and score): read back
# as typed records. The others hold records of the engine's own (documents, pruned ids) or rows that broke the
# contract (quarantine).
CONTRACT_TABLES = frozenset({"admitted", "replay", "general_replay", "selections", *EVAL_TABLES.values()})


def id_list(value: Any) -> list[str]:
    """A row's id-list field as a list of strings: a bare string is one id, never a sequence of characters."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple | set | frozenset):
        return [str(v) for v in value if v is not None]
    return [str(value)]


def _encode(rows: Iterable[dict[str, Any] | ContractRow]) -> bytes:
    plain = (r.to_json() if isinstance(r, ContractRow) else r for r in rows)
    return "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in plain).encode()


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

    def put_part(self, table: str, part: str, rows: list[dict[str, Any]] | list[ContractRow]) -> str:
        """Write (or replace) one part; the pointer moves by compare-and-swap so a concurrent scrub is never undone.

        The replaced blob is deleted only when nothing else names it (blobs are shared by content)."""
        digest = self.store.put_bytes(_encode(rows))
        old: dict[str, str | None] = {}

        def change(parts: dict[str, str]) -> dict[str, str]:
            old["digest"] = parts.get(part)
            return {**parts, part: digest}

        self.store.update_json(self._key(table), change, default={})
        if old.get("digest") and old["digest"] != digest and old["digest"] not in self.live_digests():
            self.store.delete_blob(old["digest"])
        return digest
    def rows(self, table: str, part: str | None = None) -> list[ContractRow]:
        """The typed rows of a contract table: one part, or every part in order."""
        if table not in CONTRACT_TABLES:
            self._key(table)  # an unknown table is refused with the list of tables
            raise ValueError(f"'{table}' holds no contract rows; read it with records()")
        return as_rows(self.stored(table, part))

    def records(self, table: str, part: str | None = None) -> list[dict[str, Any]]:
        """The plain records of a table of the engine's own (documents, selections, pruned ids) or the quarantine."""
        if table in CONTRACT_TABLES:
            raise ValueError(f"'{table}' holds contract rows; read it with rows()")
        return self.stored(table, part)

    def stored(self, table: str, part: str | None = None) -> list[dict[str, Any]]:
        """Any table's rows exactly as stored: what a whole-store scan (forgetting, its verification) looks through,
        whatever the table holds."""
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

    def live_digests(self) -> set[str]:
        """Every blob some table part names right now."""
        return {d for t in TABLES for d in self.parts(t).values()}

    def scrub(self, matches: Callable[[dict[str, Any]], bool], dry_run: bool = False,
              on_stale: Callable[[list[str]], None] | None = None) -> ScrubReport:
        """Remove every matching row from every table.

        Each table's pointer moves by compare-and-swap. `on_stale` hears the digests about to be replaced *before*
        the pointer moves (a journal keeps them, so a crash never strands a blob of forgotten rows); without it the
        replaced blobs are deleted at the end, unless something else still names them."""
        report = ScrubReport()
        decoded: dict[str, list[dict[str, Any]]] = {}
        stale: list[str] = []
        for table in TABLES:
            removed_here: dict[str, int] = {}

            def change(parts: dict[str, str], table: str = table, removed_here: dict = removed_here) -> dict[str, str]:
                removed_here.clear()
                new = dict(parts)
                replaced = []
                for name, digest in parts.items():
                    if digest not in decoded:
                        decoded[digest] = _decode(self.store.get_bytes(digest))
                    rows = decoded[digest]
                    keep = [r for r in rows if not matches(r)]
                    if len(keep) == len(rows):
                        continue
                    removed_here[f"{table}/{name}"] = len(rows) - len(keep)
                    replaced.append(digest)
                    if not dry_run:
                        new[name] = self.store.put_bytes(_encode(keep))
                if replaced and not dry_run:
                    if on_stale is not None:
                        on_stale(replaced)
                    stale.extend(replaced)
                return new

            if dry_run:
                change(self.parts(table))
            elif self.parts(table):
                self.store.update_json(self._key(table), change, default={})
            report.rows_removed.update(removed_here)
        if on_stale is None and not dry_run:
            live = self.live_digests()
            for digest in dict.fromkeys(stale):
                if digest in live:
                    continue
                result = self.store.delete_blob(digest)
                report.blobs_deleted.append(digest)
                report.legal_holds.extend({"blob": digest, "detail": h} for h in (getattr(result, "legal_hold", None) or []))
        return report
