"""Moving models and index snapshots between the artifact store and a local working copy."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from pipelines.lm import load_causal_lm, save_causal_lm
from pipelines.rag import DocumentIndex
from pipelines.workspace import Workspace

SNAPSHOTS_KEY = "index/snapshots.json"


def store_model(ws: Workspace, model, tokenizer) -> str:
    """Save full weights + tokenizer as a content-addressed folder; returns its digest."""
    with tempfile.TemporaryDirectory(dir=ws.work_dir) as tmp:
        save_causal_lm(model, tokenizer, Path(tmp) / "model")
        return ws.store.put_dir(Path(tmp) / "model")


def model_path(ws: Workspace, digest: str) -> Path:
    """Local copy of a stored model folder (cached by digest: digests never change content)."""
    dest = ws.home / "cache" / "models" / digest.replace(":", "_")
    if not (dest / "config.json").exists():
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


def save_index(ws: Workspace, index: DocumentIndex) -> str:
    """Store a new index snapshot version; returns its version name (what releases refer to)."""
    snaps = index_snapshots(ws)
    version = f"v{len(snaps) + 1:04d}"
    while version in snaps:
        version = f"v{int(version[1:]) + 1:04d}"
    snaps[version] = ws.store.put_bytes(index.to_bytes())
    ws.store.write_json(SNAPSHOTS_KEY, snaps)
    return version


def load_index(ws: Workspace, version: str) -> DocumentIndex:
    snaps = index_snapshots(ws)
    if version not in snaps:
        raise ValueError(f"index snapshot '{version}' not found; kept snapshots: {', '.join(sorted(snaps)) or 'none'}")
    return DocumentIndex.from_bytes(ws.store.get_bytes(snaps[version]))


def scrub_index_snapshots(ws: Workspace, doc_ids: set[str], subject_ids: set[str], fact_ids: set[str]) -> dict:
    """Remove forgotten documents from every kept snapshot, rewriting it in place and deleting the old blob."""
    snaps = index_snapshots(ws)
    removed: dict[str, int] = {}
    legal_holds: list = []
    for version, digest in sorted(snaps.items()):
        index = DocumentIndex.from_bytes(ws.store.get_bytes(digest))
        n = index.delete(sorted(doc_ids & set(index.doc_ids())))
        n += index.delete_where(subject_ids=subject_ids, fact_ids=fact_ids)
        if not n:
            continue
        snaps[version] = ws.store.put_bytes(index.to_bytes())
        ws.store.write_json(SNAPSHOTS_KEY, snaps)
        report = ws.store.delete_blob(digest)
        legal_holds.extend(getattr(report, "legal_hold", None) or [])
        removed[version] = n
    return {"removed": removed, "legal_holds": legal_holds}
