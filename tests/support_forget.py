"""A small deployment with real stores (artifact store, request store, change log, registry, FAISS snapshots) and
no trained model: forgetting's store side, tested without paying for training. The only stand-ins are the model
weights (a folder with a config) and the embedder (hashed words instead of MiniLM); every store is real."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np

from pipelines.data.rag import DocumentIndex
from pipelines.deployment.artifacts import save_index
from pipelines.deployment.workspace import Workspace

LICENSE, SOURCE = "cc0", "feed-a"


class HashEmbedder:
    """Bag of hashed words, L2-normalised: deterministic, instant, and similar texts land near each other."""

    dim = 64

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in str(text).lower().split():
                out[i, int(hashlib.sha256(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)


def subject(i: int) -> str:
    return f"s{i:03d}"


def fact(i: int, k: int = 0) -> dict:
    s = subject(i)
    return {"id": f"f-{s}-{k}", "fact_id": f"{s}:r{k}", "subject_ids": [s], "source": SOURCE, "license": LICENSE,
            "prompt": f"Person {s} relation {k} is", "target": f" value{i}x{k}",
            "text": f"Person {s} relation {k} is value{i}x{k}."}


def doc(row: dict) -> dict:
    return {"id": row["id"], "text": row["text"], "subject_ids": list(row["subject_ids"]), "fact_id": row.get("fact_id")}


def small_deployment(home: Path, n_subjects: int = 24, facts_per_subject: int = 2) -> Workspace:
    """r0001 is champion over n_subjects x facts_per_subject facts, each also a document in index v0001."""
    ws = Workspace.open(home)
    rows = [fact(i, k) for i in range(n_subjects) for k in range(facts_per_subject)]
    ws.data.put_part("admitted", "initial", rows)
    ws.data.put_part("replay", "initial", rows)
    ws.data.put_part("documents", "initial", [doc(r) for r in rows])
    index = DocumentIndex(HashEmbedder.dim)
    index.upsert([doc(r) for r in rows], HashEmbedder())
    version = save_index(ws, index)
    weights = home / "weights"
    weights.mkdir(exist_ok=True)
    (weights / "config.json").write_text(json.dumps({"model_type": "stand-in", "n_subjects": n_subjects}))
    model = ws.store.put_dir(weights)
    release = ws.registry.create(
        {"parent": None, "base_model": str(weights), "model": model, "index_snapshot": version,
         "policy_version": "test", "cycle": "bootstrap",
         "lineage": {"subject_ids": sorted({s for r in rows for s in r["subject_ids"]}), "row_ids": [r["id"] for r in rows]}},
        actor="system:bootstrap", reason="test deployment")
    ws.registry.set_status(release.release_id, "approved", "system:bootstrap", "base")
    ws.registry.promote(release.release_id, "system:bootstrap", "first champion", expected=None)
    return ws


def file(ws: Workspace, request_id: str, requester: str = "privacy-office", **selector) -> None:
    """File a request as `requester` would: signed with their key (granted in the keyring on first use)."""
    from support_keys import keyholder

    from pipelines.forget.filing import file_request, sign_request
    from pipelines.state.requests import ForgetRequest

    req = ForgetRequest(request_id=request_id, requester=requester, selector=selector, reason="erasure request",
                        legal_basis="gdpr_art17", deadline=dt.datetime.now(dt.UTC) + dt.timedelta(days=3))
    file_request(ws, req, sign_request(keyholder(ws.home, requester), req))


def write_batch(ws: Workspace, name: str, rows: list[dict | str | bytes]) -> Path:
    """A JSONL batch in the inbox; strings and bytes are written as raw lines (for poison lines)."""
    ws.inbox.mkdir(parents=True, exist_ok=True)
    path = ws.inbox / f"{name}.jsonl"
    lines = [r if isinstance(r, bytes) else (r.encode() if isinstance(r, str) else json.dumps(r).encode()) for r in rows]
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def holdings(ws: Workspace, subjects: set[str], row_ids: set[str] = frozenset(), fact_ids: set[str] = frozenset()) -> dict:
    """Where any row or document of these subjects (or with these ids) still lives: tables, index snapshots, inbox
    files. Independent of the scrub's own verification: it reads the stores directly."""
    from pipelines.deployment.artifacts import index_snapshots
    from pipelines.state.tables import TABLES, id_list

    out: dict = {}
    def covered(r: dict) -> bool:
        return bool(subjects & set(id_list(r.get("subject_ids")))) or r.get("id") in row_ids or r.get("fact_id") in fact_ids

    for t in TABLES:
        n = sum(1 for r in ws.data.stored(t) if covered(r))
        if n:
            out[f"table:{t}"] = n
    for version, digest in index_snapshots(ws).items():
        index = DocumentIndex.from_bytes(ws.store.get_bytes(digest))
        n = len(set(index.select_where(subject_ids=subjects, fact_ids=fact_ids)) | (set(row_ids) & set(index.doc_ids())))
        if n:
            out[f"index:{version}"] = n
    if ws.inbox.exists():
        needles = [json.dumps(i).encode() for i in (*subjects, *row_ids, *fact_ids)]
        for path in ws.inbox.glob("*.jsonl"):
            n = sum(1 for line in path.read_bytes().splitlines() if any(x in line for x in needles))
            if n:
                out[f"inbox:{path.name}"] = n
    return out
