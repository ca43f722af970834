"""What a forget request leaves of tainted releases, caches and the inbox: weights deleted reference-aware (never
the champion's while it serves, never a blob a kept folder shares, never the base checkpoint), resumably, or kept
under a named legal hold; model-cache copies and in-memory embeddings dropped; inbox files scrubbed whatever
their format; a request verified on the retrieval side alone keeps no cleartext either."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import zipfile
from pathlib import Path

import pytest
from support_forget import HashEmbedder, fact, file, small_deployment, subject

from pipelines.deployment.artifacts import model_path
from pipelines.forget import ForgetPlan, process_request
from pipelines.forget.refs import missing_blobs
from pipelines.forget.scrub import scrub_inbox
from pipelines.governance import rollback
from policies import load_policy, merge_overrides


@pytest.fixture
def ws(tmp_path):
    return small_deployment(tmp_path / "home")


@pytest.fixture(scope="module")
def policy():
    return load_policy("default")


def _folder(path: Path, files: dict[str, bytes]) -> Path:
    path.mkdir(parents=True)
    for name, data in files.items():
        (path / name).write_bytes(data)
    return path


def _release(ws, tmp: Path, name: str, lineage_subjects: list[str], status: str = "rejected", honoured=(),
             shared: bytes | None = None):
    """A release child of the champion with its own weights and adapter; `shared` is a file it has in common with
    the champion's weights (same bytes, so one blob)."""
    champion = ws.registry.get(ws.registry.champion())
    shared = shared if shared is not None else (Path(champion.base_model) / "config.json").read_bytes()
    model = ws.store.put_dir(_folder(tmp / f"m-{name}", {"config.json": shared, "model.bin": f"weights {name}".encode()}))
    adapter = ws.store.put_dir(_folder(tmp / f"a-{name}", {"adapter.bin": f"adapter {name}".encode()}))
    release = ws.registry.create(
        {"parent": champion.release_id, "base_model": champion.base_model, "model": model,
         "adapters": [*champion.adapters, {"digest": adapter, "method": "lora", "cycle": name}],
         "index_snapshot": champion.index_snapshot, "cycle": name, "tombstones_honoured": list(honoured),
         "lineage": {"subject_ids": lineage_subjects, "row_ids": []}}, actor="system:test", reason="test release")
    if status == "rejected":
        ws.registry.set_status(release.release_id, "rejected", "system:gates", "failed gates")
    elif status in ("approved", "champion"):
        ws.registry.set_status(release.release_id, "approved", "system:test", "test")
        if status == "champion":
            assert ws.registry.promote(release.release_id, "system:test", "test")
    return ws.registry.get(release.release_id)


def _weights(ws, request_id: str) -> set[tuple[str, str]]:
    return {(e["release"], e["outcome"]) for e in ws.requests.get(request_id).evidence.get("weights") or []}


def test_a_tainted_candidates_weights_go_and_the_serving_champions_stay(ws, policy, tmp_path):
    champion = ws.registry.champion()
    rejected = _release(ws, tmp_path, "c1", [subject(3)])
    cached = model_path(ws, rejected.model)
    shared = next(f["digest"] for f in ws.store.dir_manifest(rejected.model)["files"] if f["path"] == "config.json")

    file(ws, "req-w1", subject_ids=[subject(3)])
    out = process_request(ws, "req-w1", embedder=HashEmbedder(), policy=policy)

    assert out["state"] == "planned" and ws.registry.status(champion) == "tainted"
    assert out["scrub"]["weights"]["serving"] == [champion], "the tainted champion serves until it is replaced"
    assert ws.store.has(ws.registry.get(champion).model)
    assert not ws.store.has(rejected.model) and not any(ws.store.has(a["digest"]) for a in rejected.adapters[-1:])
    assert ws.store.has(shared), "a file the champion's weights share by content stays"
    assert not cached.exists(), "and the local model-cache copy of the deleted weights is gone"
    assert _weights(ws, "req-w1") == {(rejected.release_id, "deleted")}
    assert [e["object"] for e in ws.log.events() if e["action"] == "release.weights_deleted"] == [rejected.release_id] * 2
    assert missing_blobs(ws) == [] and ws.registry.release_problems(rejected.release_id) == []


def test_the_weights_step_resumes_after_a_crash_part_way(ws, policy, tmp_path, monkeypatch):
    rejected = _release(ws, tmp_path, "c1", [subject(4)])
    real = ws.store.delete_blob
    calls = []

    def crash_on_second(digest):
        calls.append(digest)
        if len(calls) == 2:
            raise OSError("disk went away")
        return real(digest)

    monkeypatch.setattr(ws.store, "delete_blob", crash_on_second)
    file(ws, "req-w2", subject_ids=[subject(4)])
    out = process_request(ws, "req-w2", policy=policy)
    assert out["step"] == "weights", out
    assert ws.store.has(rejected.model), "a folder's manifest goes last, so the next attempt knows its files"
    monkeypatch.setattr(ws.store, "delete_blob", real)
    out = process_request(ws, "req-w2", policy=policy)
    assert ws.requests.get("req-w2").evidence["journal"]["complete"], out
    assert not ws.store.has(rejected.model) and missing_blobs(ws) == []


def test_the_weights_of_a_release_under_a_legal_hold_stay_with_the_hold_named(ws, policy, tmp_path):
    rejected = _release(ws, tmp_path, "c1", [subject(5)])
    model_path(ws, rejected.model)
    hold = {"name": "litigation-117", "releases": [rejected.release_id], "reason": "case 117"}
    on_hold = merge_overrides(policy, {"retention": {"legal_holds": [hold]}}, "hold.yaml")
    file(ws, "req-w3", subject_ids=[subject(5)])
    out = process_request(ws, "req-w3", policy=on_hold)
    assert ws.store.has(rejected.model)
    assert out["scrub"]["weights"]["held"][rejected.release_id][0]["hold"] == "litigation-117"
    entries = [e for e in ws.requests.get("req-w3").evidence["weights"] if e["release"] == rejected.release_id]
    assert {(e["outcome"], e["hold"]) for e in entries} == {("held", "litigation-117")}
    assert {e["folder"] for e in entries} == {rejected.model, rejected.adapters[-1]["digest"]}
    assert not list((ws.home / "cache" / "models").glob("sha256_*")), "the hold keeps the store's copy only"
    from pipelines.forget.weights import release_tainted_weights

    release_tainted_weights(ws, on_hold, when="promotion")  # again: nothing recorded or logged twice
    assert len([e for e in ws.log.events() if e["action"] == "release.weights_held"]) == 2
    assert len(ws.requests.get("req-w3").evidence["weights"]) == 2


def test_the_base_checkpoint_the_deployment_names_stays(ws, policy, tmp_path):
    base = ws.registry.get(ws.registry.champion())
    ws.store.write_json("deployment.json", {"base_model": base.base_model, "model": base.model})
    file(ws, "req-w4", subject_ids=[subject(6)])
    # the successor was built honouring the request, so only the base release is tainted by it
    successor = _release(ws, tmp_path, "c1", [], status="champion", honoured=["req-w4"], shared=b"{}")
    out = process_request(ws, "req-w4", policy=policy)
    assert ws.registry.status(base.release_id) == "tainted" and ws.registry.champion() == successor.release_id
    assert out["scrub"]["weights"]["still_named"] == {base.release_id: [base.model]}
    assert ws.store.has(base.model)


def test_rolling_back_off_a_tainted_champion_deletes_its_weights(ws, policy, tmp_path):
    first = ws.registry.champion()
    newer = _release(ws, tmp_path, "c1", ["s900"], status="champion")
    file(ws, "req-w5", subject_ids=["s900"])
    process_request(ws, "req-w5", policy=policy)
    assert ws.registry.status(newer.release_id) == "tainted" and ws.store.has(newer.model), "it still serves"
    rollback.rollback(ws, policy, first, "oncall", "ml-lead", "serve the release that never saw s900")
    assert not ws.store.has(newer.model)
    assert {e["when"] for e in ws.requests.get("req-w5").evidence["weights"]} == {"rollback"}


class CachingEmbedder(HashEmbedder):
    """Records what a scrub asks it to drop from its cache."""

    def __init__(self) -> None:
        self.dropped: list[str] = []

    def forget_texts(self, texts) -> int:
        self.dropped += list(texts)
        return len(self.dropped)


def test_the_embedders_cache_of_covered_texts_is_dropped(ws, policy):
    embedder = CachingEmbedder()
    file(ws, "req-w6", subject_ids=[subject(7)])
    out = process_request(ws, "req-w6", embedder=embedder, policy=policy)
    row = fact(7, 0)
    assert {row["text"], row["prompt"], row["prompt"] + row["target"]} <= set(embedder.dropped)
    assert not [t for t in embedder.dropped if subject(8) in t], "only the covered rows' texts"
    assert out["scrub"]["data"]["embedding_cache_dropped"] == len(embedder.dropped)


def test_a_request_verified_on_the_retrieval_side_alone_keeps_no_cleartext(ws, policy):
    ws.data.put_part("documents", "extra", [{"id": "doc-x1", "text": "a memo about s950", "subject_ids": ["s950"]}])
    file(ws, "req-w7", subject_ids=["s950"])
    out = process_request(ws, "req-w7", policy=policy)
    req = ws.requests.get("req-w7")
    assert out["state"] == "verified" and req.selector is None and req.purged_at is not None


# -- the inbox, whatever the file format --------------------------------------------------------------------------
def _zip(name: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(name, data)
    return buf.getvalue()


def test_inbox_files_that_cannot_be_read_row_by_row_go_whole_when_they_hold_a_covered_id(tmp_path):
    inbox = tmp_path / "inbox"
    (inbox / "archive").mkdir(parents=True)
    line = json.dumps({"id": "r-1", "subject_ids": ["s001"], "text": "about s001"}).encode() + b"\n"
    other = json.dumps({"id": "r-2", "subject_ids": ["s0010"], "text": "about s0010"}).encode() + b"\n"
    files = {
        "a.jsonl": gzip.compress(line), "b.jsonl": line.decode().encode("utf-16"), "c.zip": _zip("c.jsonl", line),
        "d.csv": b"id,subject\nr-1,s001\n", "e.parquet": b"PAR1 not really " + line, "f.jsonl.bz2": bz2.compress(line),
        "archive/g.jsonl": line + other, "keep.jsonl.gz": gzip.compress(other), "keep.csv": b"id,subject\nr-2,s0010\n",
    }
    for name, data in files.items():
        (inbox / name).write_bytes(data)
    plan = ForgetPlan(row_ids={"r-1"}, subject_ids={"s001"})

    assert scrub_inbox(inbox, plan, dry_run=True) == scrub_inbox(inbox, plan)
    left = sorted(p.relative_to(inbox).as_posix() for p in inbox.rglob("*") if p.is_file())
    assert left == ["archive/g.jsonl", "keep.csv", "keep.jsonl.gz"], "covered files went whole; s0010 is not s001"
    assert (inbox / "archive" / "g.jsonl").read_bytes() == other, "a JSONL file in a sub-folder is rewritten row by row"
    assert scrub_inbox(inbox, plan) == {}
