"""Change log: hash chain, tamper detection located to the exact line, concurrency, redaction, mirror."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os

import pytest

from pipelines.state.ledger import GENESIS, ChangeLog, event_hash, redact
from pipelines.state.store import LocalStore


@pytest.fixture
def log(tmp_path) -> ChangeLog:
    log = ChangeLog(tmp_path / "log" / "changes.jsonl")
    for i in range(1, 6):
        log.append("alice", "release.created", f"r000{i}", reason=f"cycle {i}", run_id=f"run-{i}", details={"i": i})
    return log


def _lines(log: ChangeLog) -> list[str]:
    return log.path.read_text().splitlines(keepends=True)


def _write(log: ChangeLog, lines: list[str]) -> None:
    log.path.write_text("".join(lines))


def test_events_are_chained(log):
    events = log.events()
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert events[0]["prev_hash"] == GENESIS
    for prev, cur in zip(events, events[1:], strict=False):
        assert cur["prev_hash"] == prev["hash"]
    e = events[2]
    assert (e["actor"], e["action"], e["object"], e["reason"], e["run_id"], e["details"]) == (
        "alice",
        "release.created",
        "r0003",
        "cycle 3",
        "run-3",
        {"i": 3},
    )
    body = json.dumps({k: v for k, v in e.items() if k != "hash"}, sort_keys=True, separators=(",", ":"))
    assert e["hash"] == hashlib.sha256(body.encode()).hexdigest()
    assert e["time"].endswith("+00:00")
    assert log.verify().ok and log.verify().n_events == 5


def test_append_rejects_bad_input(tmp_path):
    log = ChangeLog(tmp_path / "c.jsonl")
    with pytest.raises(ValueError, match="actor"):
        log.append(" ", "release.created", "r1")
    with pytest.raises(ValueError, match="action"):
        log.append("a", "Release Created", "r1")
    with pytest.raises(ValueError, match="details"):
        log.append("a", "x.y", "r1", details={"bad": object()})
    assert log.events() == []


def test_edited_line(log):
    lines = _lines(log)
    lines[2] = lines[2].replace("cycle 3", "cycle 9")
    _write(log, lines)
    result = log.verify()
    assert (result.ok, result.first_bad_line, result.n_events) == (False, 3, 2)
    assert "edited" in result.problem


def test_removed_line(log):
    lines = _lines(log)
    del lines[3]
    _write(log, lines)
    result = log.verify()
    assert (result.ok, result.first_bad_line) == (False, 4)
    assert "seq is 5, expected 4" in result.problem


def test_inserted_line(log):
    lines = _lines(log)
    _write(log, lines[:4] + [lines[1]] + lines[4:])  # a copy of event 2 slipped in as line 5
    assert log.verify().first_bad_line == 5
    # a forger who rebuilds a well-formed event 5 still breaks the link to the next line
    forged = {**json.loads(lines[4]), "reason": "forged"}
    forged["hash"] = event_hash(forged)
    _write(log, lines[:4] + [json.dumps(forged) + "\n"] + lines[4:])
    result = log.verify()
    assert (result.ok, result.first_bad_line) == (False, 6)
    assert "seq is 5, expected 6" in result.problem


def test_reordered_lines(log):
    lines = _lines(log)
    lines[1], lines[2] = lines[2], lines[1]
    _write(log, lines)
    result = log.verify()
    assert (result.ok, result.first_bad_line) == (False, 2)


def test_truncated_line(log):
    lines = _lines(log)
    lines[4] = lines[4][:40]
    _write(log, lines)
    result = log.verify()
    assert (result.ok, result.first_bad_line, result.n_events) == (False, 5, 4)
    assert "not valid JSON" in result.problem
    with pytest.raises(RuntimeError, match="incomplete"):
        log.append("bob", "x.y", "o")


def test_garbage_line_in_the_middle(log):
    lines = _lines(log)
    lines[1] = "{not json\n"
    _write(log, lines)
    assert log.verify().first_bad_line == 2


def _append_many(path: str, who: str) -> None:
    log = ChangeLog(path)
    for i in range(15):
        log.append(who, "test.append", f"{who}-{i}")


def test_concurrent_processes_do_not_interleave(tmp_path):
    path = str(tmp_path / "c.jsonl")
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_append_many, args=(path, f"p{k}")) for k in range(3)]
    [p.start() for p in procs]
    [p.join() for p in procs]
    assert all(p.exitcode == 0 for p in procs)
    log = ChangeLog(path)
    result = log.verify()
    assert result.ok and result.n_events == 45
    assert sorted(e["object"] for e in log.events()) == sorted(f"p{k}-{i}" for k in range(3) for i in range(15))


def test_redaction(tmp_path):
    log = ChangeLog(tmp_path / "c.jsonl")
    salt = log.salt
    assert len(salt) == 64 and os.stat(log.path.with_name("c.jsonl.salt")).st_mode & 0o777 == 0o600
    assert ChangeLog(tmp_path / "c.jsonl").salt == salt  # stable across instances
    h = log.redact("Jane Doe <jane@example.com>")
    assert h.startswith("hmac-sha256:") and "Jane" not in h
    assert h == redact("Jane Doe <jane@example.com>", salt) != redact("Jane Doe <jane@example.com>", "other")
    log.append("ops", "forget.received", "req-1", details={"selector": h})
    assert "Jane" not in log.path.read_text() and salt not in log.path.read_text()
    with pytest.raises(ValueError, match="salt"):
        redact("x", "")


def test_mirror_is_write_once_and_catches_a_cut_tail(tmp_path):
    mirror = LocalStore(tmp_path / "mirror")
    log = ChangeLog(tmp_path / "c.jsonl", mirror=mirror)
    for i in range(3):
        log.append("ops", "test.append", f"o{i}")
    assert mirror.list_keys("changelog/") == [
        "changelog/00000001.json",
        "changelog/00000002.json",
        "changelog/00000003.json",
    ]
    assert json.loads(mirror.read_text("changelog/00000002.json")) == log.events()[1]
    assert log.verify_mirror().ok
    _write(log, _lines(log)[:2])  # cut the last line cleanly: the chain alone still looks whole
    assert log.verify().ok
    result = log.verify_mirror()
    assert (result.ok, result.first_bad_line) == (False, 3)
    with pytest.raises(RuntimeError, match="different event"):
        log.append("ops", "test.append", "o9")  # seq 3 again, but the mirror already holds another seq 3


def test_sync_mirror_backfills(tmp_path):
    log = ChangeLog(tmp_path / "c.jsonl")
    log.append("ops", "test.append", "a")
    log.append("ops", "test.append", "b")
    mirrored = ChangeLog(tmp_path / "c.jsonl", mirror=LocalStore(tmp_path / "m"))
    assert not mirrored.verify_mirror().ok
    assert mirrored.sync_mirror() == 2 and mirrored.sync_mirror() == 0
    assert mirrored.verify_mirror().ok


def test_a_reader_that_checked_the_log_once_still_sees_an_earlier_line_edited_while_it_grew(tmp_path):
    """events() checks only what was appended since its last check, and only when the bytes it checked then are
    unchanged: an edit of an early line together with an append is found by the same long-running reader."""
    from pipelines.deployment.workspace import Workspace
    from pipelines.state.ledger import LogTampered

    ws = Workspace.open(tmp_path / "home")
    log = ws.log
    for i in range(5):
        log.append("ops", "note", f"thing-{i}", reason="ordinary")
    assert len(log.events()) == 5
    log.append("ops", "note", "thing-5", reason="appended")
    assert log.events()[-1]["object"] == "thing-5", "growth is read"
    log.append("ops", "note", "thing-6", reason="appended")
    edited = log.path.read_bytes().replace(b"thing-1", b"thing-X", 1)
    log.path.write_bytes(edited)
    with pytest.raises(LogTampered, match="line 2"):
        log.events()
