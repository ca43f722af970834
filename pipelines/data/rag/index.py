"""FAISS document index with metadata, incremental upsert, deletion by id or selector, and byte snapshots.

`IndexIDMap2(IndexFlatIP)` is used because it supports exact `remove_ids`: a forget request must take effect on the
serving index at once, not at the next rebuild. Vectors are L2-normalised, so inner product is cosine similarity.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

import numpy as np

from pipelines.data.rag.embedder import text_hash
from pipelines.state.tables import id_list

_MAGIC = b"MEMGOV-FAISS\x01"
UPSERT_CHUNK = 2048  # documents embedded and added per step: memory stays flat however large the batch
_INT63 = (1 << 63) - 1


class SupportsEncode(Protocol):
    def encode(self, texts: list[str]) -> np.ndarray: ...


def doc_key(doc_id: str) -> int:
    """Stable positive 63-bit FAISS id for a document id (same on every machine and run)."""
    digest = hashlib.sha256(str(doc_id).encode("utf-8")).digest()
    return (int.from_bytes(digest[:8], "big") & _INT63) or 1


@dataclass(frozen=True)
class Hit:
    doc_id: str
    score: float
    text: str


@dataclass(frozen=True)
class UpsertReport:
    added: int
    updated: int  # text or metadata changed
    unchanged: int
    embedded: int = 0  # documents whose text had to be (re-)embedded


def _faiss():
    import faiss

    return faiss


class DocumentIndex:
    """Documents by id: vectors in FAISS, text and governance metadata (subject_ids, fact_id, ...) alongside."""

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise ValueError(f"dim must be positive, got {dim}")
        faiss = _faiss()
        self.dim = int(dim)
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
        self._meta: dict[str, dict[str, Any]] = {}
        self._by_key: dict[int, str] = {}

    # -- inspection -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._meta)

    @property
    def ntotal(self) -> int:
        """Vectors held by FAISS (equals len(self) unless something is badly wrong)."""
        return int(self._index.ntotal)

    def doc_ids(self) -> list[str]:
        return sorted(self._meta)

    def contains(self, doc_id: str) -> bool:
        return doc_id in self._meta

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._meta

    def get(self, doc_id: str) -> dict[str, Any]:
        """A copy of the document's stored fields (id, text, subject_ids, fact_id, ...)."""
        if doc_id not in self._meta:
            raise KeyError(f"document '{doc_id}' is not in the index")
        return {"id": doc_id, **{k: v for k, v in self._meta[doc_id].items() if k != "text_hash"}}

    def fingerprint(self) -> str:
        """Hash of sorted (doc id, text hash) pairs: equal fingerprints mean the same searchable content."""
        digest = hashlib.sha256()
        for doc_id in sorted(self._meta):
            digest.update(f"{doc_id}\t{self._meta[doc_id]['text_hash']}\n".encode())
        return digest.hexdigest()

    # -- mutation ---------------------------------------------------------------------------------------------
    def _validate(self, docs: list[dict[str, Any]]) -> None:
        seen: set[str] = set()
        for i, doc in enumerate(docs):
            if not isinstance(doc, Mapping):
                raise ValueError(f"document {i} is a {type(doc).__name__}; expected a dict with 'id' and 'text'")
            doc_id, text = doc.get("id"), doc.get("text")
            if not isinstance(doc_id, str) or not doc_id:
                raise ValueError(f"document {i} needs a non-empty string 'id', got {doc_id!r}")
            if not isinstance(text, str):
                raise ValueError(f"document '{doc_id}' needs a string 'text', got {type(text).__name__}")
            if doc_id in seen:
                raise ValueError(f"document id '{doc_id}' appears twice in one upsert; send each id once")
            seen.add(doc_id)
            key = doc_key(doc_id)
            owner = self._by_key.get(key)
            if owner is not None and owner != doc_id:
                raise ValueError(f"document ids '{doc_id}' and '{owner}' hash to the same key; rename one")

    def upsert(self, docs: list[dict[str, Any]], embedder: SupportsEncode) -> UpsertReport:
        """Add new documents, replace changed ones, skip unchanged ones (only new or changed text is embedded)."""
        docs = list(docs)
        self._validate(docs)
        added = updated = unchanged = 0
        to_embed: list[tuple[str, dict[str, Any]]] = []
        for doc in docs:
            doc_id = doc["id"]
            meta = self._meta_for(doc)
            old = self._meta.get(doc_id)
            if old is None:
                added += 1
                to_embed.append((doc_id, meta))
            elif old["text_hash"] != meta["text_hash"]:
                updated += 1
                to_embed.append((doc_id, meta))
            elif old != meta:
                updated += 1
                self._meta[doc_id] = meta  # metadata only: the vector is still right
            else:
                unchanged += 1
        replaced = [doc_id for doc_id, _ in to_embed if doc_id in self._meta]
        if replaced:
            self._remove_keys([doc_key(d) for d in replaced])
        for start in range(0, len(to_embed), UPSERT_CHUNK):  # a chunk's vectors at a time, not the whole batch's
            self._add(to_embed[start : start + UPSERT_CHUNK], embedder)
        return UpsertReport(added=added, updated=updated, unchanged=unchanged, embedded=len(to_embed))

    def _add(self, chunk: list[tuple[str, dict[str, Any]]], embedder: SupportsEncode) -> None:
        vectors = np.ascontiguousarray(embedder.encode([m["text"] for _, m in chunk]), dtype=np.float32)
        if vectors.shape != (len(chunk), self.dim):
            raise ValueError(
                f"embedder returned shape {vectors.shape}, index expects ({len(chunk)}, {self.dim}); "
                "use the embedder the index was built with"
            )
        keys = np.array([doc_key(doc_id) for doc_id, _ in chunk], dtype=np.int64)
        self._index.add_with_ids(vectors, keys)
        for (doc_id, meta), key in zip(chunk, keys.tolist(), strict=True):
            self._meta[doc_id] = meta
            self._by_key[int(key)] = doc_id

    @staticmethod
    def _meta_for(doc: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in doc.items() if k != "id"}
        meta["subject_ids"] = id_list(doc.get("subject_ids"))
        meta["fact_id"] = None if doc.get("fact_id") is None else str(doc["fact_id"])
        meta["text_hash"] = text_hash(doc["text"])
        # Round-trip through JSON now so that a snapshot reloads to exactly the same metadata.
        return json.loads(json.dumps(meta, sort_keys=True, default=str))

    def _remove_keys(self, keys: list[int]) -> int:
        if not keys:
            return 0
        faiss = _faiss()
        selector = faiss.IDSelectorBatch(np.asarray(keys, dtype=np.int64))
        return int(self._index.remove_ids(selector))

    def delete(self, doc_ids: Iterable[str]) -> int:
        """Remove documents by id (unknown ids are ignored); returns how many were removed."""
        present = [d for d in dict.fromkeys(doc_ids) if d in self._meta]
        keys = [doc_key(d) for d in present]
        removed = self._remove_keys(keys)
        if removed != len(present):
            raise RuntimeError(
                f"FAISS removed {removed} vectors for {len(present)} documents; the index is inconsistent"
            )
        for doc_id, key in zip(present, keys, strict=True):
            del self._meta[doc_id]
            self._by_key.pop(key, None)
        return removed

    def select_where(
        self, subject_ids: Iterable[str] | None = None, fact_ids: Iterable[str] | None = None
    ) -> list[str]:
        """Ids (sorted) of the documents linked to any of these subjects or facts, e.g. to plan a forget request."""
        subjects = {str(s) for s in subject_ids or ()}
        facts = {str(f) for f in fact_ids or ()}
        return sorted(
            doc_id
            for doc_id, meta in self._meta.items()
            if subjects.intersection(meta["subject_ids"]) or (meta["fact_id"] is not None and meta["fact_id"] in facts)
        )

    def delete_matching(self, covered: Callable[[dict[str, Any]], bool]) -> int:
        """Remove every document whose entry (`{"id", "subject_ids", "fact_id", ...}`) `covered` names: for
        tombstones, which answer one value at a time by hash."""
        return self.delete([d for d in list(self._meta) if covered(self.get(d))])

    def delete_where(self, subject_ids: Iterable[str] | None = None, fact_ids: Iterable[str] | None = None) -> int:
        """Remove every document linked to any of these subjects or facts; returns how many were removed."""
        return self.delete(self.select_where(subject_ids=subject_ids, fact_ids=fact_ids))

    # -- search -----------------------------------------------------------------------------------------------
    def search(self, queries: list[str], embedder: SupportsEncode, k: int = 3) -> list[list[Hit]]:
        """Top-k documents per query by cosine similarity, best first."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        queries = list(queries)
        if not queries:
            return []
        if self.ntotal == 0:
            return [[] for _ in queries]
        vectors = np.ascontiguousarray(np.asarray(embedder.encode(queries), dtype=np.float32))
        scores, keys = self._index.search(vectors, min(k, self.ntotal))
        results: list[list[Hit]] = []
        for row_scores, row_keys in zip(scores, keys, strict=True):
            hits = []
            for score, key in zip(row_scores.tolist(), row_keys.tolist(), strict=True):
                if key < 0:
                    continue
                doc_id = self._by_key[int(key)]
                hits.append(Hit(doc_id=doc_id, score=float(score), text=self._meta[doc_id]["text"]))
            results.append(hits)
        return results

    # -- snapshots --------------------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """One self-contained payload: magic, metadata JSON length, metadata JSON, serialized FAISS index."""
        faiss = _faiss()
        meta = json.dumps({"dim": self.dim, "docs": self._meta}, sort_keys=True, separators=(",", ":")).encode()
        blob = faiss.serialize_index(self._index)  # a uint8 array, joined without another copy
        return b"".join([_MAGIC, struct.pack(">Q", len(meta)), meta, memoryview(blob)])

    def write(self, fh: BinaryIO) -> None:
        """The `to_bytes` payload written to a seekable binary file piece by piece: the metadata a document at a
        time and the FAISS index straight from its buffers, so saving a large index holds no second copy of it."""
        faiss = _faiss()
        length_at = fh.tell() + len(_MAGIC)
        fh.write(_MAGIC + struct.pack(">Q", 0))
        n = fh.write(b'{"dim":%d,"docs":{' % self.dim)
        for i, doc_id in enumerate(sorted(self._meta)):
            entry = json.dumps(self._meta[doc_id], sort_keys=True, separators=(",", ":"))
            n += fh.write(f'{"," if i else ""}{json.dumps(doc_id)}:{entry}'.encode())
        n += fh.write(b"}}")
        end = fh.tell()
        fh.seek(length_at)
        fh.write(struct.pack(">Q", n))
        fh.seek(end)
        faiss.write_index(self._index, faiss.PyCallbackIOWriter(fh.write))

    @classmethod
    def from_bytes(cls, payload: bytes) -> DocumentIndex:
        return cls.read(io.BytesIO(payload))  # a BytesIO over bytes shares their buffer: no copy of the payload

    @classmethod
    def read(cls, fh: BinaryIO) -> DocumentIndex:
        """An index from a snapshot file (what `write` or `to_bytes` gave), the FAISS part read in chunks."""
        head = fh.read(len(_MAGIC) + 8)
        if not head.startswith(_MAGIC) or len(head) < len(_MAGIC) + 8:
            raise ValueError("not a memgov document index snapshot (bad header)")
        faiss = _faiss()
        (meta_len,) = struct.unpack(">Q", head[len(_MAGIC) :])
        meta = json.loads(fh.read(meta_len))
        index = cls.__new__(cls)
        index.dim = int(meta["dim"])
        index._index = faiss.read_index(faiss.PyCallbackIOReader(fh.read))
        index._meta = meta["docs"]
        index._by_key = {doc_key(doc_id): doc_id for doc_id in index._meta}
        if index._index.ntotal != len(index._meta) or index._index.d != index.dim:
            raise ValueError(
                f"snapshot is inconsistent: {index._index.ntotal} vectors of dim {index._index.d} "
                f"for {len(index._meta)} documents of dim {index.dim}"
            )
        return index
