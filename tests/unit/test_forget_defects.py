"""Forgetting never fails open: each defect found by trying the pipeline as an operator and as an attacker would,
reproduced on a small deployment with real stores, and what must hold instead."""

from __future__ import annotations

import json
import threading

import pytest
from support_forget import HashEmbedder, doc, fact, file, holdings, small_deployment, subject, write_batch
from support_keys import keyholder

from pipelines.deployment.artifacts import index_snapshots, load_index, save_index
from pipelines.forget import PendingForget, confirm_request, process_request, resolve_selector, retry_request
from pipelines.forget.refs import missing_blobs
from policies import load_policy


@pytest.fixture
def ws(tmp_path):
    return small_deployment(tmp_path / "home")


@pytest.fixture(scope="module")
def policy():
    return load_policy("default")


def _events(ws, action: str, obj: str | None = None) -> list[dict]:
    return [e for e in ws.log.events() if e["action"] == action and (obj is None or e["object"] == obj)]


# -- 1. index snapshots sharing one blob --------------------------------------------------------------------------
def test_snapshots_that_share_a_blob_are_all_scrubbed_and_no_named_blob_is_deleted(ws, policy):
    champion = ws.registry.get(ws.registry.champion())
    again = save_index(ws, load_index(ws, champion.index_snapshot))  # a cycle that added nothing: same bytes
    snaps = index_snapshots(ws)
    assert snaps[again] == snaps[champion.index_snapshot], "precondition: two versions, one content-addressed blob"

    file(ws, "req-shared", subject_ids=[subject(3)])
    out = process_request(ws, "req-shared", embedder=HashEmbedder(), policy=policy)

    req = ws.requests.get("req-shared")
    assert req.state == "planned" and req.evidence["journal"]["complete"], out
    assert holdings(ws, {subject(3)}) == {}, "no table, snapshot or inbox file keeps a forgotten document"
    assert missing_blobs(ws) == [], "every blob a snapshot, table or release names still exists"
    assert req.evidence["index_clean"] is True
    assert len(set(index_snapshots(ws).values())) == 1, "the shared blob was rewritten once for both versions"
    assert ws.log.verify().ok


def test_a_scrub_that_fails_part_way_is_journaled_logged_and_resumed(ws, policy, monkeypatch):
    from pipelines.forget import scrub

    file(ws, "req-crash", subject_ids=[subject(5)])
    real = scrub.scrub_index_snapshots

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(scrub, "scrub_index_snapshots", crash)
    out = process_request(ws, "req-crash", policy=policy)
    req = ws.requests.get("req-crash")
    assert out["step"] == "index" and req.state == "planned" and not req.evidence["journal"]["complete"]
    assert set(req.evidence["journal"]["done"]) == {"tombstones", "data"}, "the journal says where it stopped"
    assert req.evidence["journal"]["attempts"][-1]["error"] == "OSError: disk full"
    assert ws.requests.tombstones().has("subject", subject(5)), "tombstones first: nothing re-admits the data meanwhile"
    (failed,) = _events(ws, "forget.scrub_failed", "req-crash")
    assert "index" in failed["reason"]
    with pytest.raises(PendingForget, match="req-crash"):  # a cycle refuses to build a candidate meanwhile
        from pipelines.forget import honour_pending_requests

        honour_pending_requests(ws, policy)

    monkeypatch.setattr(scrub, "scrub_index_snapshots", real)
    process_request(ws, "req-crash", policy=policy)
    req = ws.requests.get("req-crash")
    assert req.evidence["journal"]["complete"] and holdings(ws, {subject(5)}) == {}
    assert missing_blobs(ws) == [] and ws.log.verify().ok
    stale = req.evidence["journal"]["stale"]
    assert stale and not any(ws.store.has(d) for d in stale), "the replaced blobs holding the data are gone"


def test_a_scrub_that_keeps_failing_ends_failed_with_reasons_and_can_be_retried(ws, policy, monkeypatch):
    from pipelines.forget import scrub

    file(ws, "req-stuck", subject_ids=[subject(6)])
    monkeypatch.setattr(scrub, "scrub_inbox", lambda *a, **k: (_ for _ in ()).throw(PermissionError("read-only")))
    strict = policy.model_copy(update={"unlearning": policy.unlearning.model_copy(update={"max_scrub_attempts": 2})})
    process_request(ws, "req-stuck", policy=strict)
    assert ws.requests.get("req-stuck").state == "planned"
    out = process_request(ws, "req-stuck", policy=strict)
    req = ws.requests.get("req-stuck")
    assert out["state"] == req.state == "failed" and "inbox" in req.evidence["failure"]
    assert _events(ws, "forget.failed", "req-stuck")
    monkeypatch.undo()
    assert retry_request(ws, "req-stuck", "ops-on-call", "inbox volume remounted")["resumes"] == "the scrub"
    process_request(ws, "req-stuck", policy=strict)
    assert ws.requests.get("req-stuck").evidence["journal"]["complete"] and holdings(ws, {subject(6)}) == {}


# -- 2. a poison line ---------------------------------------------------------------------------------------------
def test_a_poison_line_is_quarantined_and_neither_blocks_intake_nor_forgetting(ws, policy):
    from pipelines.cycle.stages import admit, pending_batches

    good = {**fact(40), "subject_ids": [subject(40)]}
    write_batch(ws, "b-poison", [good, "[" * 100_000 + "]" * 100_000, b'{"id": "bad-utf8", "text": "caf\xe9"}',
                {**fact(41)}])
    out = admit(ws, policy, "b-poison.jsonl")
    assert (out.admitted, out.quarantined) == (2, 2)
    # admission went through; the batch counts as processed once its cycle records an outcome (release step)
    assert [p.stem for p in pending_batches(ws)] == ["b-poison"]
    reasons = {r["id"]: r["quarantine_reasons"] for r in ws.data.records("quarantine", "b-poison")}
    assert all("unparseable" in rs for rs in reasons.values())

    file(ws, "req-after-poison", subject_ids=[subject(40)])
    process_request(ws, "req-after-poison", policy=policy)
    req = ws.requests.get("req-after-poison")
    assert req.evidence["journal"]["complete"], req.evidence["journal"]
    assert holdings(ws, {subject(40)}) == {}
    lines = (ws.inbox / "b-poison.jsonl").read_bytes().splitlines()
    assert len(lines) == 3 and lines[0].startswith(b"[[[["), "the poison line itself is kept in its file, unchanged"


# -- 3. a catastrophic regex ---------------------------------------------------------------------------------------
def test_a_catastrophic_regex_resolves_in_linear_time(ws, policy):
    rows = [{**fact(50), "text": "a" * 20_000}]
    ws.data.put_part("documents", "long", [doc(rows[0])])
    file(ws, "req-regex", text_regex="(a+)+$")
    done: dict = {}
    worker = threading.Thread(target=lambda: done.update(process_request(ws, "req-regex", policy=policy)), daemon=True)
    worker.start()
    worker.join(timeout=120)  # a backtracking engine takes longer than the age of the universe here
    assert not worker.is_alive(), "selector evaluation hung"
    assert done["state"] == "verified" and holdings(ws, {subject(50)}) == {}, done


def test_a_regex_the_linear_engine_cannot_run_is_refused_at_the_door(ws):
    with pytest.raises(ValueError, match=r"text_regex: is not a linear-time \(RE2\) regular expression.*fix:"):
        file(ws, "req-backref", text_regex=r"(\w+) \1")


def test_a_run_that_died_part_way_is_launched_again_once_its_lease_runs_out(ws, policy):
    import datetime as dt

    from dagster import build_sensor_context

    from assets.resources import MemgovResource
    from assets.sensors import forget_request_sensor
    from pipelines.forget.scrub import Journal

    file(ws, "req-killed", subject_ids=[subject(7)])
    resource = MemgovResource(home=str(ws.home))

    def keys() -> list[str]:
        out = forget_request_sensor(build_sensor_context(resources={"memgov": resource}))
        return [r.run_key for r in (out if isinstance(out, list) else list(out or []))
                if hasattr(r, "run_key")]

    assert keys() == ["req-killed"]
    Journal(ws, "req-killed").claim("run-that-gets-killed", lease_s=3600)  # the run starts, then is killed
    assert keys() == [], "while its lease holds, nobody else touches the request"
    # ... and its lease simply runs out:
    ws.requests.update_evidence("req-killed", lambda _s, e: {**e, "journal": {**e["journal"], "attempts": [
        {**e["journal"]["attempts"][-1], "lease_until": (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).isoformat()}]}})
    assert keys() == ["req-killed#attempt2"], "a new run key: Dagster launches the retry"
    process_request(ws, "req-killed", policy=policy)
    assert keys() == [] and holdings(ws, {subject(7)}) == {}


# -- 4. a selector that matches everything -------------------------------------------------------------------------
def test_a_selector_that_matches_everything_is_held_for_a_named_role(ws, policy):
    before = {t: len(ws.data.stored(t)) for t in ("admitted", "documents")}
    file(ws, "req-all", requester="mallory", text_regex=".*")
    out = process_request(ws, "req-all", policy=policy)
    assert out["state"] == "held" and ws.requests.get("req-all").state == "held"
    assert {t: len(ws.data.stored(t)) for t in before} == before, "nothing changes while the request is held"
    assert not ws.requests.tombstones().subjects, "no subject is tombstoned before confirmation"
    assert _events(ws, "forget.held", "req-all")

    with pytest.raises(ValueError, match="cannot also confirm"):
        confirm_request(ws, policy, "req-all", "Mallory", "governance", "looks fine")
    with pytest.raises(ValueError, match="allowed roles: governance"):
        confirm_request(ws, policy, "req-all", "bob", "data-scientist", "looks fine")
    confirm_request(ws, policy, "req-all", "erin", "governance", "contract ended: every row of this feed goes")
    process_request(ws, "req-all", policy=policy)
    assert ws.data.rows("admitted") == [] and ws.requests.get("req-all").evidence["journal"]["complete"]


def test_dry_run_prints_counts_per_store_and_names_the_confirmation(ws, tmp_path):
    import os
    import subprocess
    import sys

    write_batch(ws, "b-waiting", [fact(2, 5)])
    env = {**os.environ, "MEMGOV_HOME": str(ws.home), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "memgov", "forget", "--id", "q", "--requester", "x", "--reason", "y",
                           "--regex", ".*", "--dry-run"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout[:proc.stdout.rindex("}") + 1])
    assert report["stores"]["tables"]["admitted"] == 48 and report["stores"]["index_snapshots"] == {"v0001": 48}
    assert report["stores"]["inbox"] == {"b-waiting.jsonl": 1}
    assert report["confirmation_needed"]["roles"] == ["governance"] and "memgov forget confirm q" in proc.stdout

    proc = subprocess.run([sys.executable, "-m", "memgov", "forget", "--id", "q", "--requester", "x", "--reason", "y",
                           "--subject-id", subject(1), "--dry-run"], capture_output=True, text=True, env=env)
    report = json.loads(proc.stdout)
    assert report["confirmation_needed"] is None and report["tombstones"]["subject_ids"] == 1
    tables = report["stores"]["tables"]
    assert {t: n for t, n in tables.items() if n} == {"admitted": 2, "replay": 2, "documents": 2}
    assert {"quarantine", "selections", "eval_general", "eval_unseen"} <= set(tables), "every store is counted"


# -- 5. a string where a list is expected --------------------------------------------------------------------------
def test_a_string_subject_list_is_one_subject_never_its_characters(ws, policy):
    legacy = {**fact(60), "subject_ids": "zq-77"}  # admitted before types were enforced
    ws.data.put_part("admitted", "legacy", [legacy])
    assert resolve_selector(ws.data, {"row_ids": [legacy["id"]]}).subject_ids == {"zq-77"}
    assert legacy["id"] in resolve_selector(ws.data, {"subject_ids": ["zq-77"]}).row_ids
    with pytest.raises(ValueError, match=r"is a string, not a list; fix: write \['zq-77'\]"):
        file(ws, "req-str", subject_ids="zq-77")


# -- 6. requests wait for a daemon that is off ---------------------------------------------------------------------
def test_a_cycle_scrubs_pending_requests_before_admission_without_the_daemon(ws, policy):
    from pipelines.cycle.stages import admit, candidate_index
    from pipelines.forget.filing import submit_forget_request

    submit_forget_request(home=ws.home, key=keyholder(ws.home, "privacy-office"), request_id="req-nodaemon",
                          selector={"subject_ids": [subject(8)]}, reason="erasure", legal_basis="gdpr_art17",
                          deadline_days=3)
    assert _events(ws, "forget.received", "req-nodaemon"), "filed from code, logged like the CLI"
    write_batch(ws, "b-next", [fact(8, 7), fact(30)])  # the forgotten subject arrives again, with a new fact
    out = admit(ws, policy, "b-next.jsonl")
    assert out.forget_requests_scrubbed == ["req-nodaemon"]
    assert (out.admitted, out.quarantined) == (1, 0), "the inbox is scrubbed before the batch is read"
    index = candidate_index(ws, policy, out, HashEmbedder())
    assert not load_index(ws, index.index_snapshot).select_where(subject_ids=[subject(8)])
    assert holdings(ws, {subject(8)}) == {}
    write_batch(ws, "b-later", [fact(8, 9)])
    later = admit(ws, policy, "b-later.jsonl")
    assert later.quarantine_reasons == {"tombstoned": 1}, "and its tombstone keeps it out afterwards"


# -- 7. admission lets through what it claims to stop ---------------------------------------------------------------
def test_an_all_quarantined_batch_builds_no_candidate(ws, monkeypatch):
    from assets.runner import run_cycle

    monkeypatch.setenv("MEMGOV_HOME", str(ws.home))
    write_batch(ws, "b-bad", [{**fact(70), "license": "proprietary"}])
    releases, snaps = len(ws.registry.list()), dict(index_snapshots(ws))
    result = run_cycle(ws, "b-bad.jsonl")
    assert result.success, "an expected outcome is a verdict, not a failed run"
    assert len(ws.registry.list()) == releases and index_snapshots(ws) == snaps
    assert _events(ws, "batch.admitted", "b-bad")[0]["reason"] == "0 admitted, 1 quarantined"


def test_an_oversized_requester_is_refused_with_the_limit(ws):
    with pytest.raises(ValueError, match="requester: String should have at most 256 characters"):
        file(ws, "req-long", requester="x" * 1_000_000, subject_ids=[subject(1)])
