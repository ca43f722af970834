"""Row tables: append, read, snapshot hashes, and scrubbing that leaves no copy behind."""

from pipelines.state.store import open_store
from pipelines.state.tables import DataStore


def _rows(prefix, n, subject="s1"):
    return [{"id": f"{prefix}{i}", "text": f"t{i}", "subject_ids": [subject if i % 2 else "s2"]} for i in range(n)]


def test_parts_round_trip_and_snapshot_changes(tmp_path):
    data = DataStore(open_store(str(tmp_path / "a")))
    before = data.snapshot("admitted")
    data.put_part("admitted", "b1", _rows("a", 4))
    assert [r["id"] for r in data.rows("admitted")] == ["a0", "a1", "a2", "a3"]
    assert data.snapshot("admitted") != before


def test_scrub_removes_rows_everywhere_and_deletes_old_blobs(tmp_path):
    store = open_store(str(tmp_path / "a"))
    data = DataStore(store)
    data.put_part("admitted", "b1", _rows("a", 4))
    data.put_part("replay", "b1", _rows("r", 2))
    old = data.parts("admitted")["b1"]
    dry = data.scrub(lambda r: "s1" in r["subject_ids"], dry_run=True)
    assert dry.rows_removed == {"admitted/b1": 2, "replay/b1": 1} and store.has(old)
    report = data.scrub(lambda r: "s1" in r["subject_ids"])
    assert report.rows_removed == {"admitted/b1": 2, "replay/b1": 1}
    assert not store.has(old)
    assert all("s1" not in r["subject_ids"] for t in ("admitted", "replay") for r in data.rows(t))


def test_unknown_table_is_refused(tmp_path):
    data = DataStore(open_store(str(tmp_path / "a")))
    try:
        data.rows("secrets")
    except ValueError as exc:
        assert "admitted" in str(exc)
    else:
        raise AssertionError("unknown table accepted")
