"""Forget requests and tombstones: validation messages, idempotent intake, state machine, monotone tombstones."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import sqlite3
import threading

import pytest
from pydantic import ValidationError
from support_keys import keyholder

from pipelines.forget.filing import submit_forget_request
from pipelines.state.requests import ForgetRequest, RequestStore, Selector, Tombstones

FUTURE = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)


def _fields(**over) -> dict:
    base = {
        "request_id": "req-001",
        "requester": "dpo@corp",
        "selector": {"subject_ids": ["s0007"], "subject": "Jane Roe"},
        "reason": "erasure request",
        "legal_basis": "gdpr_art17",
        "deadline": FUTURE,
    }
    return {**base, **over}


@pytest.fixture
def db(tmp_path) -> RequestStore:
    store = RequestStore(tmp_path / "requests.db")
    yield store
    store.close()


@pytest.mark.parametrize(
    "override, expected",
    [
        ({"request_id": "has space"}, r"request_id: 'has space' is not a valid request id; fix: use 1-64 characters"),
        ({"request_id": "x" * 65}, r"request_id: .*fix: use 1-64"),
        ({"requester": " "}, r"requester: is empty; fix: name who asked"),
        ({"reason": ""}, r"reason: is empty; fix: say in words"),
        ({"legal_basis": "gdpr"}, r"legal_basis: 'gdpr' is not a known legal basis; fix: use one of gdpr_art17, ccpa"),
        ({"deadline": dt.datetime(2031, 1, 1)}, r"deadline: has no timezone; fix: give a timezone-aware ISO time"),
        ({"deadline": "2001-01-01T00:00:00+00:00"}, r"deadline: 2001-01-01T00:00:00\+00:00 is not in the future"),
        ({"urgent": "maybe"}, r"urgent: .*fix: use true or false"),
        ({"selector": {}}, r"selector: selects nothing; fix: set at least one of row_ids, subject_ids, subject, "),
        ({"selector": {"names": ["x"]}}, r"selector.names: unknown field; fields are row_ids, subject_ids, subject"),
        ({"selector": {"text_regex": "(ab"}}, r"selector.text_regex: is not a linear-time \(RE2\) regular expression .*fix: drop backreferences"),
        ({"selector": {"row_ids": ["a", ""]}}, r"selector.row_ids: contains an empty id"),
        ({"colour": "red"}, r"colour: unknown field; fields are request_id, requester, selector, reason, legal_basis"),
    ],
)
def test_validation_names_the_field_and_the_fix(override, expected):
    with pytest.raises(ValueError, match=expected):
        ForgetRequest(**_fields(**override))


def test_validation_lists_every_bad_field_at_once():
    with pytest.raises(ValueError) as info:
        ForgetRequest(**_fields(requester="", legal_basis="x", selector={}))
    text = str(info.value)
    assert text.startswith("invalid forget request:")
    assert all(f"  - {f}:" in text for f in ("requester", "legal_basis", "selector"))
    missing = _fields()
    del missing["reason"]
    with pytest.raises(ValueError, match="reason: Field required; fix: say in words"):
        ForgetRequest(**missing)


def test_selector_alone():
    assert Selector(row_ids=["r1"]).row_ids == ["r1"]
    with pytest.raises(ValidationError, match="text_regex"):
        Selector(text_regex="[")
    with pytest.raises(ValueError, match="row_ids, subject_ids, subject, text_regex"):
        Selector()


def test_deadline_is_stored_in_utc():
    local = FUTURE.astimezone(dt.timezone(dt.timedelta(hours=5)))
    assert ForgetRequest(**_fields(deadline=local)).deadline == FUTURE


def test_submit_is_idempotent(db):
    stored, created = db.submit(ForgetRequest(**_fields()))
    assert created and stored.state == "received" and stored.selector["subject"] == "Jane Roe"
    assert "received" in stored.timestamps and stored.selector_hash.startswith("hmac-sha256:")
    same_instant = FUTURE.astimezone(dt.timezone(dt.timedelta(hours=-3)))
    again, created = db.submit(_fields(deadline=same_instant))
    assert not created and again == stored
    with pytest.raises(ValueError, match="req-001' already exists with different content"):
        db.submit(_fields(reason="another reason"))
    assert db.get("req-001").reason == "erasure request" and len(db.list()) == 1


def test_concurrent_identical_submissions_store_one(db):
    start = threading.Barrier(4)
    created: list[bool] = []

    def submit() -> None:
        start.wait()
        created.append(db.submit(_fields())[1])

    threads = [threading.Thread(target=submit) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(created) == [False, False, False, True]


def test_state_machine(db):
    db.submit(_fields())
    with pytest.raises(ValueError, match="cannot go from 'received' to 'applied'; allowed: planned, held, failed"):
        db.transition("req-001", "applied")
    with pytest.raises(ValueError, match="unknown state 'done'"):
        db.transition("req-001", "done")
    db.transition("req-001", "planned", {"rows": 12}, note="plan ready")
    db.transition("req-001", "planned", {"facts": 3})  # re-run of the same step: merged, no new timestamp
    db.transition("req-001", "applied", {"index_deleted": 12})
    done = db.transition("req-001", "verified", {"forget_recall": 0.0, "rows": 11})
    assert done.state == "verified"
    assert done.evidence == {"rows": 11, "facts": 3, "index_deleted": 12, "forget_recall": 0.0}
    assert list(done.timestamps) == ["received", "planned", "applied", "verified"]
    assert done.timestamps["received"] <= done.timestamps["planned"] <= done.timestamps["verified"]
    assert done.notes[0]["note"] == "plan ready" and done.notes[0]["state"] == "planned"
    with pytest.raises(ValueError, match="from 'verified' to 'failed'; allowed: none"):
        db.transition("req-001", "failed")
    with pytest.raises(ValueError, match="evidence must be JSON"):
        db.transition("req-001", "verified", {"x": object()})
    assert db.get("req-001").evidence == done.evidence  # a refused change writes nothing
    with pytest.raises(KeyError):
        db.transition("nope", "planned")


def test_failure_paths_and_listing(db):
    for rid in ("a1", "a2", "a3"):
        db.submit(_fields(request_id=rid))
    db.transition("a1", "failed", {"error": "selector matched nothing"})
    db.transition("a2", "planned")
    db.transition("a2", "failed")
    assert [r.request_id for r in db.list(["failed"])] == ["a1", "a2"]
    assert [r.request_id for r in db.list(["received", "planned"])] == ["a3"]
    with pytest.raises(ValueError, match="unknown state"):
        db.list(["open"])


def test_processing_runs_and_deadline_report(db):
    db.submit(_fields(request_id="late", deadline=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)))
    db.mark_processing_run("late", "run-1")
    assert db.mark_processing_run("late", "run-1").processing_runs == ["run-1"]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    report = db.deadline_report("late", now=later)
    assert (report["met"], report["overdue"], report["verified_at"]) == (False, True, None)
    assert report["remaining_s"] < 0
    assert db.deadline_report("late")["met"] is None  # still in time
    db.submit(_fields(request_id="fast"))
    for state in ("planned", "applied", "verified"):
        db.transition("fast", state)
    report = db.deadline_report("fast", now=later)
    assert report["met"] is True and not report["overdue"] and 0 <= report["time_to_verified_s"] < 60


def test_purge_cleartext(db):
    stored, _ = db.submit(_fields())
    with pytest.raises(ValueError, match="only after it is verified"):
        db.purge_cleartext("req-001")
    for state in ("planned", "applied", "verified"):
        db.transition("req-001", state)
    purged = db.purge_cleartext("req-001")
    assert purged.selector is None and purged.selector_hash == stored.selector_hash and purged.purged_at
    assert db.purge_cleartext("req-001").purged_at == purged.purged_at
    assert db.submit(_fields())[1] is False  # idempotency survives the purge
    with contextlib.closing(sqlite3.connect(db.engine.url.database)) as conn:
        raw = conn.execute("SELECT selector FROM forget_requests").fetchall()
    assert "Jane" not in str(raw)


def test_tombstones_are_monotone(db):
    db.submit(_fields(request_id="q1"))
    db.submit(_fields(request_id="q2"))
    assert db.add_tombstones("q1", row_ids=["row-1", "row-2"], subject_ids=["s0007"]) == 3
    assert db.add_tombstones("q1", row_ids=["row-1"]) == 0
    assert db.add_tombstones("q2", fact_ids=["f9"], doc_ids=["d3"], row_ids=["row-1"]) == 3
    t = db.tombstones()
    assert t == Tombstones.of(t.salt, row_ids={"row-1", "row-2"}, subject_ids={"s0007"}, fact_ids={"f9"},
                              doc_ids={"d3"}, request_ids={"q1", "q2"})
    stored = {v for (v,) in sqlite3.connect(db.engine.url.database).execute("SELECT value FROM tombstones")}
    assert len(stored) == 5 and all(v.startswith("hmac-sha256:") for v in stored), "no forgotten id is kept in clear"
    assert t.covers({"id": "row-2"}) and t.covers({"id": "x", "fact_id": "f9"})
    assert t.covers({"id": "x", "subject_ids": ["s0001", "s0007"]}) and t.covers({"doc_id": "d3"})
    assert not t.covers({"id": "row-3", "fact_id": "f1", "subject_ids": ["s0001"]})
    with pytest.raises(KeyError):
        db.add_tombstones("unknown", row_ids=["r"])
    with pytest.raises(ValueError, match="row_ids"):
        db.add_tombstones("q1", row_ids=[""])
    assert not any("delete" in name or "remove" in name for name in dir(db) if "tombstone" in name)
    conn = sqlite3.connect(db.engine.url.database, isolation_level=None)  # autocommit: holds no lock after
    for sql in ("DELETE FROM tombstones", "UPDATE tombstones SET value = 'x'"):
        with pytest.raises(sqlite3.IntegrityError, match="permanent"):
            conn.execute(sql)
    conn.close()
    assert db.tombstones() == t


def test_a_tombstone_an_older_version_kept_in_clear_still_holds(db):
    db.submit(_fields(request_id="q-old"))
    conn = sqlite3.connect(db.engine.url.database, isolation_level=None)
    conn.execute("INSERT INTO tombstones (request_id, kind, value, created_at) VALUES ('q-old', 'subject', 's0042', "
                 "'2026-01-01 00:00:00')")
    conn.close()
    tomb = db.tombstones()
    assert tomb.has("subject", "s0042") and tomb.covers({"id": "x", "subject_ids": ["s0042"]})


def test_reopened_database_sees_the_same_data(tmp_path):
    path = tmp_path / "sub" / "requests.db"
    first = RequestStore(path)
    stored, _ = first.submit(_fields())
    first.transition("req-001", "planned", {"rows": 2})
    first.add_tombstones("req-001", subject_ids=["s0007"])
    first.close()
    second = RequestStore(f"sqlite:///{path}")
    again = second.get("req-001")
    assert (again.state, again.evidence, again.selector_hash) == ("planned", {"rows": 2}, stored.selector_hash)
    assert again.deadline == stored.deadline and again.deadline.tzinfo is not None
    assert second.tombstones().has("subject", "s0007"), "the salt survives reopening, so the hashes still match"
    assert second.submit(_fields())[1] is False  # same salt after reopening: identical content still matches
    second.close()


def test_client(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    fields = {k: v for k, v in _fields(request_id="ops-1").items() if k != "deadline"}
    key = keyholder(tmp_path / "home", fields["requester"])
    stored, created = submit_forget_request(url, key=key, home=tmp_path / "home", deadline_days=7, **fields)
    assert created and stored.deadline > dt.datetime.now(dt.UTC) + dt.timedelta(days=6)
    from pipelines.state.ledger import ChangeLog

    log = ChangeLog(tmp_path / "home" / "changelog.jsonl")
    (event,) = [e for e in log.events() if e["action"] == "forget.received"]
    assert event["object"] == "ops-1" and event["actor"] == fields["requester"]
    assert "s0007" not in json.dumps(event), "the log names selectors by a salted hash only"
    assert submit_forget_request(url, key=key, home=tmp_path / "home", **fields, deadline=stored.deadline)[1] is False
    assert len([e for e in log.events() if e["action"] == "forget.received"]) == 1, "a resubmission is not logged twice"
    with pytest.raises(ValueError, match="deadline_days must be a positive number"):
        submit_forget_request(url, key=key, home=tmp_path / "home", deadline_days=0, **fields)
    with pytest.raises(ValueError, match="legal_basis"):
        submit_forget_request(url, key=key, home=tmp_path / "home", deadline_days=1, **{**fields, "legal_basis": "because"})
