"""The request store's schema is Alembic's: a new store is created at head, a store at an old revision with data
in it is upgraded without losing a row, and a store made before migrations existed is adopted."""

from __future__ import annotations

import sqlite3

from sqlalchemy import create_engine
from support_requests import assert_upgraded_with_its_row, forget_request

from pipelines.state.requests.migrate import HEAD, MIGRATIONS, _config, current_revision
from pipelines.state.requests.store import RequestStore


def test_head_is_the_newest_migration():
    from alembic.script import ScriptDirectory

    cfg = _config(None)
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD
    assert (MIGRATIONS / "env.py").exists()


ROW = ("INSERT INTO forget_requests (request_id, requester, selector, selector_hash, content_hash, reason, "
       "legal_basis, deadline, urgent, state, received_at, evidence, notes, processing_runs) VALUES "
       "('req-old', 'privacy-office', '{\"subject_ids\": [\"s001\"]}', 'h', 'c', 'erasure', 'gdpr_art17', "
       "'2031-01-01 00:00:00.000000', 0, 'planned', '2030-01-01 00:00:00.000000', '{\"plan\": {\"rows\": 2}}', "
       "'[]', '[]')")


def test_a_store_at_an_old_revision_with_data_is_upgraded_in_place(tmp_path):
    from alembic import command

    path = tmp_path / "requests.db"
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        command.upgrade(_config(conn), "0001")
    engine.dispose()
    with sqlite3.connect(path) as db:  # a store in service at revision 0001, with a request and its tombstone
        db.execute(ROW)
        db.execute("INSERT INTO tombstones (request_id, kind, value, created_at) VALUES "
                   "('req-old', 'subject', 'hmac-sha256:ab', '2030-01-01 00:00:00.000000')")
    store = RequestStore(f"sqlite:///{path}")
    assert_upgraded_with_its_row(store)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM tombstones").fetchone() == (1,)
    store.submit(forget_request("req-new"))
    assert {r.request_id for r in store.list()} == {"req-old", "req-new"}


def test_a_store_from_before_migrations_is_adopted_and_keeps_its_rows(tmp_path):
    path = tmp_path / "requests.db"
    store = RequestStore(f"sqlite:///{path}")
    store.submit(forget_request("req-legacy"))
    store.engine.dispose()
    with sqlite3.connect(path) as db:  # as create_all left it: no alembic_version, no indexes of 0002
        db.execute("DROP TABLE alembic_version")
        db.execute("DROP INDEX ix_forget_requests_deadline")
        db.execute("DROP INDEX ix_forget_requests_received_at")
    adopted = RequestStore(f"sqlite:///{path}")
    with adopted.engine.connect() as conn:
        assert current_revision(conn) == HEAD
    assert adopted.get("req-legacy").state == "received"


def test_tombstones_stay_permanent_under_migrations(tmp_path):
    import pytest

    path = tmp_path / "requests.db"
    RequestStore(f"sqlite:///{path}").engine.dispose()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO forget_requests (request_id, requester, selector_hash, content_hash, reason, "
                   "legal_basis, deadline, urgent, state, received_at, evidence, notes, processing_runs) VALUES "
                   "('r', 'p', 'h', 'c', 'x', 'other', '2031-01-01', 0, 'received', '2030-01-01', '{}', '[]', '[]')")
        db.execute("INSERT INTO tombstones (request_id, kind, value, created_at) VALUES ('r', 'row', 'v', '2030')")
        with pytest.raises(sqlite3.IntegrityError, match="tombstones are permanent"):
            db.execute("DELETE FROM tombstones")
