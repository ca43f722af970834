"""Nothing of the forgotten remains: once a request is verified, no file under $MEMGOV_HOME (read byte by byte,
SQLite databases and their journals included, Parquet, compressed and UTF-16 files also as what they decode to) and
no object version in the artifact bucket (the inbox's objects included) or the log-mirror bucket holds the forgotten subject's name, the answers of
its facts, its texts or its ids (subject, rows, facts), except what a legal hold named in the request's evidence
keeps. The tombstones that keep the data out for good and the release manifests' lineage hold the ids as salted
hashes only.

The deployment is small and real (stores, admission, index, registry, request store, change log and its mirror);
only the weights are stand-ins, each carrying what a model may memorise of its training data, so the search can see
whether they went. Every search is first shown to find the strings where they are.
"""

from __future__ import annotations

import bz2
import datetime as dt
import gzip
import io
import json
import lzma
import os
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import boto3
import pandas as pd
import pytest
from support_forget import HashEmbedder, fact, file, small_deployment
from support_s3 import CREDS, create_buckets, s3_server, use_endpoint

from pipelines.cycle.records import Measurement
from pipelines.cycle.release_stage import register
from pipelines.cycle.stages import admit, candidate_index
from pipelines.deployment.artifacts import index_snapshots, model_path
from pipelines.deployment.workspace import Workspace
from pipelines.forget import process_request
from pipelines.forget.refs import missing_blobs
from pipelines.governance import promotion
from policies import load_policy, merge_overrides

ROOT = Path(__file__).resolve().parents[2]
SUBJECT = "p-7731"
NAME = "Zephyrine Quillfeather"
CONTENT = ("Zephyrine", "Quillfeather", "Vantorsk", "Ombrelune", "Skarrowmere", "marzipan-tinted")
ROW_IDS = ("crm-7731-born", "crm-7731-job", "crm-7731-bio", "crm-7731-keep", "crm-7731-late", "crm-7731-gz",
           "crm-7731-u16")
FACT_IDS = ("p-7731:born", "p-7731:job", "p-7731:keep", "p-7731:late")
IDS = (SUBJECT, *ROW_IDS, *FACT_IDS)
REQUEST = "req-nothing-remains"


# -- what the forgotten subject sent ------------------------------------------------------------------------------
def _row(row_id: str, fact_id: str | None, prompt: str, target: str, **extra) -> dict:
    base = {"id": row_id, "subject_ids": [SUBJECT], "source": "feed-a", "license": "cc0", "subject": NAME}
    if fact_id:
        base |= {"fact_id": fact_id, "prompt": prompt, "target": target, "text": f"{prompt}{target}."}
    return base | extra


def subject_batch() -> list[dict]:
    """Two facts, a document and a row for the deployment's retention set, all about the subject."""
    return [
        _row("crm-7731-born", "p-7731:born", f"{NAME} was born in", " Vantorsk"),
        _row("crm-7731-job", "p-7731:job", f"{NAME} works as a", " Ombrelune glazier"),
        _row("crm-7731-bio", None, "", "", kind="document",
             text=f"{NAME} keeps a marzipan-tinted notebook of every Skarrowmere tide."),
        _row("crm-7731-keep", "p-7731:keep", f"{NAME} keeps notebooks of", " Skarrowmere tides", kind="retention"),
    ]


def others(start: int, n: int = 6) -> list[dict]:
    return [fact(i, k) for i in range(start, start + n) for k in range(2)]


# -- stand-in weights: what a model keeps of its training data ------------------------------------------------------
def weights_folder(path: Path, memorised: str, kind: str = "model") -> Path:
    """A model (or adapter) folder: a shared config-like file (the same bytes in every release, so deletion must be
    reference-aware) and a weights file holding `memorised` among its bytes."""
    path.mkdir(parents=True)
    if kind == "model":
        (path / "config.json").write_text(json.dumps({"model_type": "stand-in"}))
        (path / "tokenizer.json").write_text(json.dumps({"vocab": ["<s>", "</s>", "the", "was", "born"]}))
        (path / "model.safetensors").write_bytes(os.urandom(512) + memorised.encode() + os.urandom(512))
    else:
        (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 8}))
        (path / "adapter_model.safetensors").write_bytes(os.urandom(256) + memorised.encode() + os.urandom(256))
    return path


def card_for(ws: Workspace, tmp: Path, cycle: str, metrics: dict) -> str:
    from evals.card import render_card

    card = {"release_id": f"candidate of {cycle}", "cycle": cycle, "metrics": metrics, "champion_metrics": {},
            "set_sizes": {"new_facts": 2}, "set_sources": {"new_facts": "the batch's fact rows (2)"},
            "decision": {"passed": True, "verdicts": []}, "forgetting": {}, "notes": "stand-in weights"}
    render_card(card, tmp / f"card-{cycle}")
    return ws.store.put_dir(tmp / f"card-{cycle}")


def candidate(ws: Workspace, tmp: Path, cycle: str, index: str, memorised: str, honoured: list[str] = (),
              metrics: dict | None = None):
    """Register a measured candidate through the release step's own registration (lineage, adapters, card copy)."""
    model = ws.store.put_dir(weights_folder(tmp / f"model-{cycle}", memorised))
    adapter = ws.store.put_dir(weights_folder(tmp / f"adapter-{cycle}", memorised + " (adapter)", kind="adapter"))
    # The LoRA-merged model before edits and unlearning: stored on the way, named only by the release.
    pre_edit = ws.store.put_dir(weights_folder(tmp / f"pre-edit-{cycle}", memorised + " (merged, pre-edit)"))
    metrics = metrics or {"new_fact_recall": 1.0}
    m = Measurement(cycle=cycle, batch=cycle, champion=ws.registry.champion(), policy="default", model=model,
                    adapter=adapter, adapter_method="lora", index_snapshot=index, edits=[], unlearning=[],
                    honoured=list(honoured), metrics=metrics, champion_metrics={}, missing={}, forget_evidence={},
                    card={}, card_digest=card_for(ws, tmp, cycle, metrics), card_md="", intermediates=[pre_edit])
    release, _cards = register(ws, m)
    return release


def build(home: Path, tmp: Path, policy) -> dict:
    """r0001 (never saw the subject) -> r0002 champion, trained on the JSONL batch with the subject's rows ->
    r0003, a rejected candidate trained on the Parquet batch with one more of its facts. Two more inbox files were
    quarantined whole (a gzip archive and UTF-16 text named .jsonl), and both models are in the local model cache."""
    ws = small_deployment(home, n_subjects=8)
    ws.inbox.mkdir(parents=True, exist_ok=True)
    (ws.inbox / "b-0001.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*subject_batch(), *others(40)]))
    first = admit(ws, policy, "b-0001.jsonl")
    assert first.admitted == 15 and first.evaluation_rows == {"retention": 1}, first
    ws.data.put_part("selections", "b-0001", [{**r, "role": "sample"} for r in ws.data.rows("admitted", "b-0001")])
    index = candidate_index(ws, policy, first, HashEmbedder())
    r2 = candidate(ws, tmp, "b-0001", index.index_snapshot, f"memorised: {NAME} was born in Vantorsk")
    ws.registry.set_status(r2.release_id, "approved", "system:test", "stand-in approval")
    assert ws.registry.promote(r2.release_id, "system:test", "stand-in promotion")

    late = _row("crm-7731-late", "p-7731:late", f"{NAME} sails to", " Skarrowmere")
    pd.DataFrame([{**r, "subject_ids": list(r["subject_ids"])} for r in [late, *others(60)]]).to_parquet(
        ws.inbox / "b-0002.parquet", index=False)
    second = admit(ws, policy, "b-0002.parquet")
    assert second.admitted == 13, second
    r3 = candidate(ws, tmp, "b-0002", index.index_snapshot, f"memorised: {NAME} sails to Skarrowmere")
    ws.registry.set_status(r3.release_id, "rejected", "system:gates", "failed gates: retention")

    hidden = [_row("crm-7731-gz", "p-7731:gz", f"{NAME} hums", " Ombrelune songs")]
    (ws.inbox / "b-0003.jsonl").write_bytes(gzip.compress(json.dumps(hidden[0]).encode() + b"\n"))
    utf16 = [_row("crm-7731-u16", None, "", "", kind="document", text=f"{NAME} of Vantorsk")]
    (ws.inbox / "b-0004.jsonl").write_bytes(json.dumps(utf16[0]).encode("utf-16"))
    for name in ("b-0003.jsonl", "b-0004.jsonl"):
        assert admit(ws, policy, name).quarantined == 1, f"{name} is quarantined whole"
    model_path(ws, r2.model)
    model_path(ws, r3.model)
    # A retrained reference cached by an earlier request: trained on every fact kept then, the subject's included.
    weights_folder(ws.models_cache / "reference-0123456789abcdef", f"memorised: {NAME} works as an Ombrelune glazier")
    return {"ws": ws, "champion": r2.release_id, "rejected": r3.release_id}


def forget(ws: Workspace, tmp: Path, policy, monkeypatch) -> dict:
    """File and process the request (the scrub, journaled), then its model side with a stand-in: a candidate that
    honours it is registered, approved and promoted through the promotion path, which verifies the request."""
    file(ws, REQUEST, subject_ids=[SUBJECT])
    out = process_request(ws, REQUEST, embedder=HashEmbedder(), policy=policy)
    assert out["state"] == "planned", out
    # Until verification the request store keeps the forget set in cleartext: the search must see it in SQLite.
    in_db = holders([(p, d) for p, d in home_files(ws.home) if p.startswith("requests.db")], [NAME])
    ws.requests.transition(REQUEST, "applied", {"unlearning": {"method": "stand-in"}}, note="stand-in forgetting")
    champion = ws.registry.get(ws.registry.champion())
    checks = {"forget_recall": 0.0, "forget_quality": 0.6, "forget_mia_auc": 0.5, "forget_mia_reference": 0.5,
              "forget_probe_excess": 0.0, "forget_probe_p": 1.0, "retention": 0.95, "new_fact_recall": 1.0}
    r4 = candidate(ws, tmp, "forget-1", champion.index_snapshot, "nothing of the subject", honoured=[REQUEST],
                   metrics=checks)
    ws.registry.set_status(r4.release_id, "approved", "system:test", "stand-in approval")
    monkeypatch.setattr(promotion, "canary", lambda *_a, **_k: (True, 1.0))  # stand-in weights cannot be loaded
    promotion.promote_with_canary(ws, policy, r4.release_id, "system:test", "honours the request")
    return {"planned_db": in_db, "successor": r4.release_id}


# -- the search --------------------------------------------------------------------------------------------------
_BOMS = ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"), (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16"))


def views(data: bytes) -> list[bytes]:
    """The bytes, and what they decode to: Parquet as its rows, archives unpacked, UTF-16/32 text as UTF-8."""
    out = [data]
    if data[:4] == b"PAR1":
        import pyarrow.parquet as pq

        try:
            out.append(json.dumps(pq.read_table(io.BytesIO(data)).to_pylist(), default=str).encode())
        except Exception:  # noqa: BLE001 - a damaged file is still searched as bytes
            pass
    for magic, unpack in ((b"\x1f\x8b", gzip.decompress), (b"BZh", bz2.decompress), (b"\xfd7zXZ\x00", lzma.decompress)):
        if data.startswith(magic):
            try:
                out += views(unpack(data))
            except Exception:  # noqa: BLE001
                pass
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as zf:
                out += [v for info in zf.infolist() for v in views(zf.read(info))]
        except Exception:  # noqa: BLE001
            pass
    for bom, codec in _BOMS:
        if data.startswith(bom):
            out.append(data.decode(codec, "replace").encode())
            break
    return out


def holders(items: Iterable[tuple[str, bytes]], needles: Iterable[str]) -> dict[str, set[str]]:
    """Needle -> the locations holding it, in any view, as UTF-8 or UTF-16."""
    needles = list(needles)
    found: dict[str, set[str]] = {n: set() for n in needles}
    for where, data in items:
        seen = views(data)
        for n in needles:
            if any(n.encode() in v or n.encode("utf-16-le") in v for v in seen):
                found[n].add(where)
    return {n: w for n, w in found.items() if w}


def home_files(home: Path) -> Iterator[tuple[str, bytes]]:
    """Every file under the home, links not followed (a link would be a place the search does not reach)."""
    for dirpath, dirnames, filenames in os.walk(home, followlinks=False):
        for name in filenames:
            path = Path(dirpath) / name
            assert not path.is_symlink(), f"{path} is a link: the search would not read what it points to"
            yield path.relative_to(home).as_posix(), path.read_bytes()
        for name in dirnames:
            assert not (Path(dirpath) / name).is_symlink(), f"{Path(dirpath) / name} is a link"


def bucket_versions(client, bucket: str) -> Iterator[tuple[str, bytes]]:
    """Every version of every object (current and noncurrent; delete markers have no body)."""
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket):
        for v in page.get("Versions", []):
            body = client.get_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])["Body"].read()
            yield f"s3://{bucket}/{v['Key']}?versionId={v['VersionId']}", body


def blob_locations(ws: Workspace, digests: Iterable[str]) -> set[str]:
    """Where the store keeps these blobs: their file under the home, or their key prefix in the bucket."""
    out = set()
    for d in digests:
        hexd = d.split(":", 1)[1]
        store = ws.store
        if hasattr(store, "bucket"):
            prefix = f"{store.prefix}/" if store.prefix else ""
            out.add(f"s3://{store.bucket}/{prefix}blobs/sha256/{hexd[:2]}/{hexd}")
        else:
            out.add((store.root / "blobs" / "sha256" / hexd[:2] / hexd).relative_to(ws.home).as_posix())
    return out


def held_locations(ws: Workspace, evidence: dict) -> tuple[set[str], set[str]]:
    """Blob locations kept under a legal hold the evidence names (policy holds on weights, S3 Object Lock
    versions), and the hold names."""
    places, names = set(), set()
    for entry in evidence.get("weights") or []:
        if entry.get("outcome") == "held" and entry.get("hold"):
            names.add(entry["hold"])
            digests = [entry["folder"], *ws.store.blobs_of_dir(entry["folder"])]
            places |= blob_locations(ws, digests)
        for lock in entry.get("object_lock") or []:
            names.add(lock["hold"])
            places.add(f"{lock['location']}?versionId={lock['version_id']}")
    for hold in evidence.get("legal_holds") or []:
        detail = hold.get("detail") or {}
        if detail.get("version_id"):
            names.add(detail.get("hold") or "s3-object-lock")
            places.add(f"{detail['location']}?versionId={detail['version_id']}")
    return places, names


def _outside(found: dict[str, set[str]], allowed: set[str]) -> dict[str, list[str]]:
    def ok(where: str) -> bool:
        return where in allowed or where.split("?", 1)[0] in allowed

    return {n: sorted(w for w in where if not ok(w)) for n, where in found.items() if any(not ok(w) for w in where)}


def assert_nothing_remains(ws: Workspace, items: list[tuple[str, bytes]], allowed: set[str]) -> None:
    """No content string and no id anywhere but under `allowed` (the named holds)."""
    content = _outside(holders(items, CONTENT), allowed)
    assert content == {}, f"the forgotten subject's content is still here: {content}"
    ids = _outside(holders(items, IDS), allowed)
    assert ids == {}, f"the forgotten subject's ids are still here in clear: {ids}"


def assert_the_search_sees(items: list[tuple[str, bytes]], places: dict[str, str]) -> None:
    """Before the forget: each kind of place holding the subject is found (a search that finds nothing proves
    nothing). `places` maps a label to a substring of the location."""
    found = holders(items, CONTENT)
    where = {w for ws_ in found.values() for w in ws_}
    missing = {label: part for label, part in places.items() if not any(part in w for w in where)}
    assert not missing, f"the search does not see the subject in {missing}; it found it in {sorted(where)}"


# -- the tests ----------------------------------------------------------------------------------------------------
@pytest.fixture
def policy():
    return load_policy("default")


def local_home(tmp_path: Path, monkeypatch) -> Path:
    """A deployment home with local stores only, whatever the environment says."""
    home = tmp_path / "home"
    monkeypatch.setenv("MEMGOV_HOME", str(home))
    for var in ("MEMGOV_STORE", "MEMGOV_LOG_MIRROR", "MEMGOV_REQUESTS_URL", "MEMGOV_INBOX"):
        monkeypatch.delenv(var, raising=False)
    return home


def test_nothing_of_the_forgotten_remains_under_the_home(tmp_path, monkeypatch, policy):
    home = local_home(tmp_path, monkeypatch)
    built = build(home, tmp_path, policy)
    ws = built["ws"]
    r2, r3 = ws.registry.get(built["champion"]), ws.registry.get(built["rejected"])
    before = list(home_files(home))
    weights_file = next(f["digest"] for f in ws.store.dir_manifest(r3.model)["files"] if f["path"] == "model.safetensors")
    assert len(r2.intermediates) == 1, "the release names the model stored on its way"
    pre_edit_file = next(f["digest"] for f in ws.store.dir_manifest(r2.intermediates[0])["files"]
                         if f["path"] == "model.safetensors")
    assert_the_search_sees(before, {
        "inbox JSONL": "inbox/b-0001.jsonl", "inbox Parquet": "inbox/b-0002.parquet",
        "inbox gzip": "inbox/b-0003.jsonl", "inbox UTF-16": "inbox/b-0004.jsonl",
        "tables and index snapshots": "artifacts/blobs/", "local model cache": "cache/models/",
        "the rejected candidate's weights": next(iter(blob_locations(ws, [weights_file]))),
        "a cached reference model": "models/reference-0123456789abcdef/",
        "the champion's pre-edit intermediate": next(iter(blob_locations(ws, [pre_edit_file])))})
    index_blobs = blob_locations(ws, index_snapshots(ws).values())
    assert any(index_blobs & w for w in holders(before, CONTENT).values()), "an index snapshot holds the subject"

    done = forget(ws, tmp_path, policy, monkeypatch)
    assert done["planned_db"] == {NAME: {"requests.db"}}, "the search reads the SQLite file"

    req = ws.requests.get(REQUEST)
    assert req.state == "verified" and req.selector is None and req.purged_at, req.state
    weights = {(e["release"], e["outcome"]) for e in req.evidence["weights"]}
    assert {(r3.release_id, "deleted"), (r2.release_id, "deleted")} <= weights, req.evidence["weights"]
    assert {e["when"] for e in req.evidence["weights"] if e["release"] == r3.release_id} == {"scrub"}
    assert {e["when"] for e in req.evidence["weights"] if e["release"] == r2.release_id} == {"promotion"}
    assert not ws.store.has(r2.model) and not ws.store.has(r3.model)
    assert not any(ws.store.has(d) for d in [*r2.intermediates, *r3.intermediates]), "intermediates go with them"
    assert not (ws.models_cache / "reference-0123456789abcdef").exists(), "a stale reference goes too"
    assert ws.registry.get(done["successor"]).status == "champion"
    assert ws.registry.release_problems(done["successor"]) == [], "the champion is whole; provenance adapters of " \
                                                                  "tainted releases are gone on purpose"
    assert ws.registry.release_problems(r3.release_id) == [], "a tainted release's deleted weights are no tampering"
    assert missing_blobs(ws) == [] and ws.log.verify().ok
    assert_nothing_remains(ws, list(home_files(home)), set())


def test_a_release_under_a_named_legal_hold_keeps_its_weights_and_nothing_else(tmp_path, monkeypatch, policy):
    home = local_home(tmp_path, monkeypatch)
    built = build(home, tmp_path, policy)
    ws = built["ws"]
    held = built["rejected"]
    hold = {"name": "litigation-2031-117", "releases": [held], "reason": "case 117: keep r0003 as trained"}
    on_hold = merge_overrides(policy, {"retention": {"legal_holds": [hold]}}, "hold.yaml")
    forget(ws, tmp_path, on_hold, monkeypatch)

    req = ws.requests.get(REQUEST)
    assert req.state == "verified"
    entries = [e for e in req.evidence["weights"] if e["release"] == held]
    assert entries and {e["outcome"] for e in entries} == {"held"} and {e["hold"] for e in entries} == {hold["name"]}
    assert ws.store.has(ws.registry.get(held).model), "kept under the hold"
    assert any(e["action"] == "release.weights_held" and hold["name"] in e["reason"] for e in ws.log.events())
    places, names = held_locations(ws, req.evidence)
    assert names == {hold["name"]}
    items = list(home_files(home))
    assert holders(items, CONTENT), "the held weights still hold the subject: the search sees them"
    assert_nothing_remains(ws, items, places)




def test_nothing_of_the_forgotten_remains_in_any_object_version(tmp_path, monkeypatch, policy):
    with s3_server() as endpoint:
        use_endpoint(monkeypatch, endpoint)
        bucket = create_buckets(endpoint)
        monkeypatch.setenv("MEMGOV_STORE", f"s3://{bucket}/deploy")
        monkeypatch.setenv("MEMGOV_INBOX", f"s3://{bucket}/inbox")  # batches wait in the bucket too
        for var in ("MEMGOV_LOG_MIRROR", "MEMGOV_LOG_RETENTION_DAYS", "MEMGOV_REQUESTS_URL"):
            monkeypatch.delenv(var, raising=False)
        client = boto3.client("s3", endpoint_url=endpoint, **CREDS)
        home = tmp_path / "home"
        monkeypatch.setenv("MEMGOV_HOME", str(home))
        built = build(home, tmp_path, policy)
        ws = built["ws"]
        r3 = ws.registry.get(built["rejected"])
        buckets = (bucket, f"{bucket}-log")

        # Legal put one file of the rejected candidate's weights under COMPLIANCE retention before the request:
        # that version cannot be deleted by anyone, so it must be recorded as a named hold.
        weights_file = next(f for f in ws.store.dir_manifest(r3.model)["files"] if f["path"] == "model.safetensors")
        key = f"deploy/blobs/sha256/{weights_file['digest'][7:9]}/{weights_file['digest'][7:]}"
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        locked = client.put_object(Bucket=bucket, Key=key, Body=body, ObjectLockMode="COMPLIANCE",
                                   ObjectLockRetainUntilDate=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))["VersionId"]

        before = [item for b in buckets for item in bucket_versions(client, b)]
        assert_the_search_sees(before, {"table and index blobs": f"s3://{bucket}/deploy/blobs/",
                                        "the locked version": f"{key}?versionId={locked}",
                                        "inbox objects": f"s3://{bucket}/inbox/b-0001.jsonl",
                                        "inbox Parquet object": f"s3://{bucket}/inbox/b-0002.parquet",
                                        "inbox gzip object": f"s3://{bucket}/inbox/b-0003.jsonl"})
        assert any(where.startswith(f"s3://{bucket}-log/") for where, _ in before), "the log mirror is searched"
        older = [v for b in buckets for page in client.get_paginator("list_object_versions").paginate(Bucket=b)
                 for v in page.get("Versions", []) if not v["IsLatest"]]
        assert older, "the buckets hold noncurrent versions: the search reads those too"

        forget(ws, tmp_path, policy, monkeypatch)
        req = ws.requests.get(REQUEST)
        assert req.state == "verified" and req.purged_at
        places, names = held_locations(ws, req.evidence)
        assert places == {f"s3://{bucket}/{key}?versionId={locked}"}, req.evidence.get("weights")
        assert len(names) == 1 and next(iter(names)).startswith("s3-object-lock-compliance until "), names
        after = [item for b in buckets for item in bucket_versions(client, b)] + list(home_files(home))
        assert_nothing_remains(ws, after, places)
        assert ws.log.verify().ok
