"""The request store on a real PostgreSQL server: created by its migrations, tombstones refused UPDATE and DELETE
by a trigger, an old revision with data upgraded in place, and concurrent openers of a new database agreeing."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from support_requests import assert_upgraded_with_its_row, forget_request

from pipelines.state.requests.migrate import HEAD, _config, current_revision
from pipelines.state.requests.store import RequestStore


def test_a_new_store_on_postgres_is_at_head_and_its_tombstones_are_permanent(postgres):
    url = postgres.url(postgres.create_database("store_new"))
    opened: list[RequestStore] = []
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            opened.append(RequestStore(url))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(opened) == 4, errors
    store = opened[0]
    with store.engine.connect() as conn:
        assert current_revision(conn) == HEAD
    store.submit(forget_request("req-pg"))
    store.transition("req-pg", "planned", {"plan": {"rows": 1}})
    with store.engine.begin() as conn:
        conn.execute(text("INSERT INTO tombstones (request_id, kind, value, created_at) "
                          "VALUES ('req-pg', 'row', 'hmac-sha256:cd', now())"))
    for statement in ("DELETE FROM tombstones", "UPDATE tombstones SET value = 'x'"):
        with pytest.raises(DBAPIError, match="tombstones are permanent"), store.engine.begin() as conn:
            conn.execute(text(statement))
    assert store.get("req-pg").state == "planned"


def test_an_old_revision_with_data_is_upgraded_in_place_on_postgres(postgres):
    from alembic import command

    url = postgres.url(postgres.create_database("store_old"))
    engine = create_engine(url)
    with engine.begin() as conn:
        command.upgrade(_config(conn), "0001")
        conn.execute(text(
            "INSERT INTO forget_requests (request_id, requester, selector, selector_hash, content_hash, reason, "
            "legal_basis, deadline, urgent, state, received_at, evidence, notes, processing_runs) VALUES "
            "('req-old', 'privacy-office', CAST(:sel AS json), 'h', 'c', 'erasure', 'gdpr_art17', "
            "now() + interval '3 days', false, 'planned', now(), CAST(:ev AS json), '[]', '[]')"),
            {"sel": json.dumps({"subject_ids": ["s001"]}), "ev": json.dumps({"plan": {"rows": 2}})})
    engine.dispose()
    store = RequestStore(url)
    assert_upgraded_with_its_row(store)
