"""What the request-store tests share: a valid request, and what an upgraded store must show."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import inspect

from pipelines.state.requests import ForgetRequest
from pipelines.state.requests.migrate import HEAD, current_revision
from pipelines.state.requests.store import RequestStore


def forget_request(request_id: str) -> ForgetRequest:
    return ForgetRequest(request_id=request_id, requester="privacy-office", selector={"subject_ids": ["s001"]},
                         reason="erasure", legal_basis="gdpr_art17",
                         deadline=dt.datetime.now(dt.UTC) + dt.timedelta(days=3))


def assert_upgraded_with_its_row(store: RequestStore) -> None:
    """At head, with the indexes the later revisions add, and the old revision's request 'req-old' intact."""
    with store.engine.connect() as conn:
        assert current_revision(conn) == HEAD
        names = {ix["name"] for ix in inspect(conn).get_indexes("forget_requests")}
    assert {"ix_forget_requests_deadline", "ix_forget_requests_received_at"} <= names
    old = store.get("req-old")
    assert (old.state, old.selector, old.evidence) == ("planned", {"subject_ids": ["s001"]}, {"plan": {"rows": 2}})
