"""Moving models and index snapshots between the artifact store and a local working copy."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from pipelines.core.digests import dir_digest
from pipelines.data.rag import DocumentIndex
from pipelines.deployment.workspace import Workspace
from pipelines.model.lm import load_causal_lm, save_causal_lm

log = logging.getLogger(__name__)

SNAPSHOTS_KEY = "index/snapshots.json"


def store_model(ws: Workspace, model, tokenizer) -> str:
    """Save full weights + tokenizer as a content-addressed folder; returns its digest."""
    with tempfile.TemporaryDirectory(dir=ws.work_dir) as tmp:
        save_causal_lm(model, tokenizer, Path(tmp) / "model")
        return ws.store.put_dir(Path(tmp) / "model")


def model_path(ws: Workspace, digest: str) -> Path:
    """Local copy of a stored model folder, cached by digest and re-hashed on every use: the cache is a plain
    folder anyone on the host can write, so a copy that no longer hashes to its digest is discarded and restored
    from the store (whose blobs are checked on read) instead of being loaded."""
    dest = ws.home / "cache" / "models" / digest.replace(":", "_")
    if (dest / "config.json").exists() and dir_digest(dest) == digest:
        return dest
    if dest.exists():
        log.warning("model cache %s does not hash to its digest; restoring it from the store", dest)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    ws.store.get_dir(digest, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def load_model(ws: Workspace, digest: str):
    return load_causal_lm(model_path(ws, digest))


def index_snapshots(ws: Workspace) -> dict[str, str]:
    return dict(ws.store.read_json(SNAPSHOTS_KEY, default={}))


def read_index(ws: Workspace, digest: str) -> DocumentIndex:
    """An index snapshot read from the store as a file: a large index is never held twice while it loads."""
    with ws.store.open_blob(digest) as fh:
        return DocumentIndex.read(fh)


def store_index(ws: Workspace, index: DocumentIndex) -> str:
    """The index's snapshot as a blob, written through a file in the work folder: a large index is streamed to
    the store, never held as one payload beside itself."""
    fd, tmp = tempfile.mkstemp(dir=ws.work_dir, prefix=".index-", suffix=".snapshot")
    try:
        with os.fdopen(fd, "wb") as fh:
            index.write(fh)
        return ws.store.put_file(Path(tmp))
    finally:
        Path(tmp).unlink(missing_ok=True)


def save_index(ws: Workspace, index: DocumentIndex) -> str:
    """Store a new index snapshot version; returns its version name (what releases refer to).

    The snapshot map moves by compare-and-swap, so a scrub running at the same time is never undone."""
    digest = store_index(ws, index)
    chosen: dict[str, str] = {}

    def add(snaps: dict[str, str]) -> dict[str, str]:
        version = f"v{len(snaps) + 1:04d}"
        while version in snaps:
            version = f"v{int(version[1:]) + 1:04d}"
        chosen["version"] = version
        return {**snaps, version: digest}

    ws.store.update_json(SNAPSHOTS_KEY, add, default={})
    return chosen["version"]


def load_index(ws: Workspace, version: str) -> DocumentIndex:
    snaps = index_snapshots(ws)
    if version not in snaps:
        raise ValueError(f"index snapshot '{version}' not found; kept snapshots: {', '.join(sorted(snaps)) or 'none'}")
    return read_index(ws, snaps[version])


def scrub_index_snapshots(ws: Workspace, doc_ids: set[str], subject_ids: set[str], fact_ids: set[str],
                          on_stale=None) -> dict:
    """Remove forgotten documents from every kept snapshot; the snapshot map moves once, by compare-and-swap.

    Snapshots share blobs by content (a cycle that adds nothing writes the champion's bytes again), so each
    distinct blob is rewritten once and every version naming it moves to the new one. The replaced blobs are
    reported to `on_stale` before the map moves; deleting them is the caller's, once nothing names them."""
    removed: dict[str, int] = {}
    rewritten: dict[str, tuple[str, int]] = {}

    def change(snaps: dict[str, str]) -> dict[str, str]:
        removed.clear()
        new = dict(snaps)
        for version, digest in sorted(snaps.items()):
            if digest not in rewritten:
                index = read_index(ws, digest)
                n = index.delete(sorted(set(doc_ids) & set(index.doc_ids())))
                n += index.delete_where(subject_ids=subject_ids, fact_ids=fact_ids)
                rewritten[digest] = (store_index(ws, index) if n else digest, n)
            new[version], n = rewritten[digest]
            if n:
                removed[version] = n
        stale = sorted({d for v, d in snaps.items() if new[v] != d})
        if stale and on_stale is not None:
            on_stale(stale)
        return new

    ws.store.update_json(SNAPSHOTS_KEY, change, default={})
    return {"removed": dict(removed), "legal_holds": []}


def index_holds(ws: Workspace, doc_ids: set[str], subject_ids: set[str], fact_ids: set[str]) -> dict[str, list[str]]:
    """Per snapshot version, the covered documents it still holds (empty when the scrub is complete)."""
    out: dict[str, list[str]] = {}
    cache: dict[str, list[str]] = {}
    for version, digest in sorted(index_snapshots(ws).items()):
        if digest not in cache:
            index = read_index(ws, digest)
            hits = set(doc_ids) & set(index.doc_ids())
            hits |= set(index.select_where(subject_ids=subject_ids, fact_ids=fact_ids))
            cache[digest] = sorted(hits)
        if cache[digest]:
            out[version] = cache[digest]
    return out
