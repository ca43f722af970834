"""Forget-request store and tombstones in one SQL database (SQLite file by default, any SQLAlchemy URL).

Requests hold the only cleartext selectors in the system, and `purge_cleartext` drops them once a request is
verified. Tombstones are insert-only: there is no delete API, and triggers (SQLite and Postgres) refuse DELETE and UPDATE.
The schema is managed by Alembic (pipelines/state/requests/migrations), applied on open.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import StaticPool

from .migrate import migrate
from .models import ForgetRequest

STATES = ("received", "held", "planned", "applied", "verified", "failed")
TRANSITIONS = {
    "received": ("planned", "held", "failed"),
    # A plan too broad for the policy waits for a named role's confirmation; nothing is changed meanwhile.
    "held": ("received", "failed"),
    "planned": ("applied", "failed"),
    "applied": ("verified", "failed"),
    "verified": (),
    # An operator's retry (pipelines.forget.retry_request): back to planning when planning failed, else to
    # model-side forgetting with the data still scrubbed.
    "failed": ("received", "planned"),
}
TOMBSTONE_KINDS = ("row", "subject", "fact", "doc")


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite returns naive datetimes; everything is stored in UTC, so re-attach it."""
    if value is None:
        return None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class _Base(DeclarativeBase):
    pass


class _Request(_Base):
    __tablename__ = "forget_requests"
    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    requester: Mapped[str] = mapped_column(String(256))
    selector: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    selector_hash: Mapped[str] = mapped_column(String(80))
    content_hash: Mapped[str] = mapped_column(String(80))
    reason: Mapped[str] = mapped_column(Text)
    legal_basis: Mapped[str] = mapped_column(String(32))
    deadline: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(16), index=True)
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    held_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    planned_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    applied_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    verified_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    failed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    purged_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    evidence: Mapped[dict] = mapped_column(JSON, default=dict)
    notes: Mapped[list] = mapped_column(JSON, default=list)
    processing_runs: Mapped[list] = mapped_column(JSON, default=list)


class _Tombstone(_Base):
    __tablename__ = "tombstones"
    __table_args__ = (UniqueConstraint("kind", "value", "request_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    request_id: Mapped[str] = mapped_column(String(64), ForeignKey("forget_requests.request_id"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    value: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


class _Meta(_Base):
    __tablename__ = "memgov_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)




@dataclass(frozen=True)
class StoredRequest:
    request_id: str
    requester: str
    selector: dict | None  # None once purged; selector_hash stays
    selector_hash: str
    reason: str
    legal_basis: str
    deadline: dt.datetime
    urgent: bool
    state: str
    timestamps: dict[str, dt.datetime]
    evidence: dict
    notes: list[dict]
    processing_runs: list[str]
    purged_at: dt.datetime | None

    @classmethod
    def _from_row(cls, row: _Request) -> StoredRequest:
        times = {s: _utc(getattr(row, f"{s}_at")) for s in STATES if getattr(row, f"{s}_at") is not None}
        return cls(
            row.request_id,
            row.requester,
            row.selector,
            row.selector_hash,
            row.reason,
            row.legal_basis,
            _utc(row.deadline),
            row.urgent,
            row.state,
            times,
            dict(row.evidence or {}),
            list(row.notes or []),
            list(row.processing_runs or []),
            _utc(row.purged_at),
        )


@dataclass(frozen=True)
class Tombstones:
    """Everything that must never come back, held as salted hashes: the request store keeps no forgotten id in
    clear, so the ids themselves are gone with the data. Callers ask about one value (`has`, `covers`) and the
    value is hashed with the store's secret salt to answer."""

    salt: str = ""
    rows: frozenset[str] = frozenset()
    subjects: frozenset[str] = frozenset()
    facts: frozenset[str] = frozenset()
    docs: frozenset[str] = frozenset()
    request_ids: frozenset[str] = frozenset()

    @classmethod
    def of(cls, salt: str, row_ids=(), subject_ids=(), fact_ids=(), doc_ids=(), request_ids=()) -> Tombstones:
        """Tombstones for cleartext ids (tests and callers that hold a plan): hashed here like the store's."""
        digest = lambda kind, values: frozenset(tombstone_digest(salt, kind, v) for v in values)  # noqa: E731
        return cls(salt, digest("row", row_ids), digest("subject", subject_ids), digest("fact", fact_ids),
                   digest("doc", doc_ids), frozenset(request_ids))

    def _of_kind(self, kind: str) -> frozenset[str]:
        return {"row": self.rows, "subject": self.subjects, "fact": self.facts, "doc": self.docs}[kind]

    def digest(self, kind: str, value: str) -> str:
        return tombstone_digest(self.salt, kind, value)

    def has(self, kind: str, value: Any) -> bool:
        return value is not None and self.digest(kind, str(value)) in self._of_kind(kind)

    def has_fact(self, fact_id: Any) -> bool:
        return self.has("fact", fact_id)

    def covers(self, row: Mapping[str, Any]) -> bool:
        """A data row (a typed record or as stored), document or index entry any tombstone names (by id, fact,
        document or subject)."""
        if not isinstance(row, Mapping):
            return False
        subjects = row.get("subject_ids") or []
        subjects = [subjects] if isinstance(subjects, str) else list(subjects)
        if row.get("subject_id") is not None:
            subjects.append(row["subject_id"])
        return (
            self.has("row", row.get("id"))
            or self.has("doc", row.get("id"))
            or self.has("fact", row.get("fact_id"))
            or self.has("doc", row.get("doc_id"))
            or any(self.has("subject", s) for s in subjects)
        )

    # The scrub's plan interface, so an inbox file can be cleaned of tombstoned rows by these hashes.
    def matches(self, row: dict) -> bool:
        return self.covers(row)

    def matches_raw(self, raw: str) -> bool:
        """An unparseable line cannot be judged by hashed ids; forget requests' own plans judge those by text."""
        return False

    def __bool__(self) -> bool:
        return bool(self.rows or self.subjects or self.facts or self.docs)


def tombstone_digest(salt: str, kind: str, value: str) -> str:
    """What the store keeps for a forgotten id: an HMAC under the store's secret salt, per kind of id."""
    return TOMBSTONE_HASH + hmac.new(salt.encode(), f"{kind}\x00{value}".encode(), hashlib.sha256).hexdigest()


TOMBSTONE_HASH = "hmac-sha256:"


def _engine_for(url: str):
    if "://" not in url:  # a plain path means a SQLite file
        url = f"sqlite:///{Path(url).expanduser().resolve()}"
    if not url.startswith("sqlite"):
        return create_engine(url)
    database = url.split(":///", 1)[1] if ":///" in url else ""
    if database in ("", ":memory:"):
        engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
    else:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy issue BEGIN itself (below)
        dbapi_conn.execute("PRAGMA foreign_keys=ON")
        dbapi_conn.execute("PRAGMA secure_delete=ON")  # purged cleartext is overwritten on disk, not left in free pages

    @event.listens_for(engine, "begin")
    def _begin(conn) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # take the write lock up front: no lost read-modify-write

    return engine


def _without_cleartext(evidence: dict) -> dict:
    """A verified request's evidence without what it forgot: the plan's prompts and answers and the journal's ids
    become counts (the tombstones keep the ids, hashed)."""
    out = dict(evidence)
    if "plan" in out:
        plan = dict(out["plan"] or {})
        if "forget_qas" in plan:
            plan["forget_qas_purged"] = {"n": len(plan.pop("forget_qas") or [])}
        out["plan"] = plan
    journal = dict(out.get("journal") or {})
    if isinstance(journal.get("plan"), dict):
        journal["plan"] = {k: len(v) if isinstance(v, list) else v for k, v in journal["plan"].items()}
        out["journal"] = journal
    return out


def _add_missing_columns(conn) -> None:
    """Stores made before migrations existed get the nullable columns added since (no data changes), so that
    they match revision 0001 before they are stamped with it."""
    from sqlalchemy import inspect

    have = {c["name"] for c in inspect(conn).get_columns("forget_requests")}
    for column in _Request.__table__.columns:
        if column.name not in have and column.nullable:
            conn.exec_driver_sql(f"ALTER TABLE forget_requests ADD COLUMN {column.name} "
                                 f"{column.type.compile(dialect=conn.dialect)}")


class RequestStore:
    def __init__(self, url: str | Path, salt: str | None = None):
        self.url = str(url)
        self.engine = _engine_for(self.url)
        migrate(self.engine, legacy_fix=_add_missing_columns)  # the schema is Alembic's (migrations/)
        self._db_salt = self._stored_salt()  # idempotency hashes: must not change between openings
        self._selector_salt = salt or self._db_salt  # e.g. ChangeLog.salt, so log and store hashes agree

    def close(self) -> None:
        self.engine.dispose()

    def _stored_salt(self) -> str:
        """A per-database secret for hashing selectors; created once and kept in the database."""
        for _ in range(2):  # two openers of a new database: the loser of the insert reads the winner's salt
            try:
                with Session(self.engine) as s, s.begin():
                    row = s.get(_Meta, "selector_salt")
                    if row is None:
                        row = _Meta(key="selector_salt", value=secrets.token_hex(32))
                        s.add(row)
                    return row.value
            except IntegrityError:
                continue
        raise RuntimeError("could not read or create the store's selector salt")

    @staticmethod
    def _hash(obj: Any, salt: str) -> str:
        return "hmac-sha256:" + hmac.new(salt.encode(), _canonical(obj).encode("utf-8"), hashlib.sha256).hexdigest()

    def selector_hash(self, selector: dict) -> str:
        """The salted hash that stands for a selector wherever cleartext must not go (change log, reports)."""
        return self._hash(selector, self._selector_salt)

    def _row(self, s: Session, request_id: str, lock: bool = False) -> _Request:
        """`lock` takes a row lock on server databases (SELECT ... FOR UPDATE); SQLite already holds BEGIN IMMEDIATE."""
        row = s.get(_Request, request_id, with_for_update=lock)
        if row is None:
            raise KeyError(f"no forget request {request_id!r} in {self.url}")
        return row

    # -- requests -----------------------------------------------------------------------
    def submit(self, req: ForgetRequest | dict) -> tuple[StoredRequest, bool]:
        """Store a new request (created=True) or return the identical one already stored (created=False)."""
        req = req if isinstance(req, ForgetRequest) else ForgetRequest(**req)
        content = req.model_dump(mode="json")
        content_hash = self._hash(content, self._db_salt)
        for _ in range(2):  # a concurrent insert of the same id on a server database: re-read once
            try:
                with Session(self.engine) as s, s.begin():
                    row = s.get(_Request, req.request_id)
                    if row is not None:
                        if row.content_hash != content_hash:
                            raise ValueError(
                                f"request_id {req.request_id!r} already exists with different content; fix: resubmit "
                                "the identical request, or choose a new request_id"
                            )
                        return StoredRequest._from_row(row), False
                    row = _Request(
                        request_id=req.request_id,
                        requester=req.requester,
                        selector=content["selector"],
                        selector_hash=self.selector_hash(content["selector"]),
                        content_hash=content_hash,
                        reason=req.reason,
                        legal_basis=req.legal_basis,
                        deadline=req.deadline,
                        urgent=req.urgent,
                        state="received",
                        received_at=_now(),
                        evidence={},
                        notes=[],
                        processing_runs=[],
                    )
                    s.add(row)
                    s.flush()
                    return StoredRequest._from_row(row), True
            except IntegrityError:
                continue
        raise RuntimeError(f"could not store request {req.request_id!r}: the database kept refusing the insert")

    def get(self, request_id: str) -> StoredRequest:
        with Session(self.engine) as s:
            return StoredRequest._from_row(self._row(s, request_id))

    def list(self, states: Iterable[str] | None = None) -> list[StoredRequest]:
        query = sa_select(_Request).order_by(_Request.received_at, _Request.request_id)
        if states is not None:
            states = list(states)
            unknown = [x for x in states if x not in STATES]
            if unknown:
                raise ValueError(f"unknown state(s) {unknown}; states are {', '.join(STATES)}")
            query = query.where(_Request.state.in_(states))
        with Session(self.engine) as s:
            return [StoredRequest._from_row(r) for r in s.scalars(query)]

    def state_counts(self) -> dict[str, int]:
        """How many requests are in each state, counted by the database (cheap with any number on file)."""
        from sqlalchemy import func

        with Session(self.engine) as s:
            return {state: n for state, n in s.execute(
                sa_select(_Request.state, func.count()).group_by(_Request.state))}

    def most_pressing(self, states: Iterable[str], limit: int = 20) -> list[StoredRequest]:
        """The `limit` requests in `states` with the nearest deadlines (the deadline index serves it)."""
        query = (sa_select(_Request).where(_Request.state.in_(list(states)))
                 .order_by(_Request.deadline, _Request.request_id).limit(limit))
        with Session(self.engine) as s:
            return [StoredRequest._from_row(r) for r in s.scalars(query)]

    def transition(
        self, request_id: str, new_state: str, evidence: dict | None = None, note: str = ""
    ) -> StoredRequest:
        """Move along received -> planned -> applied -> verified (or -> failed); evidence is merged, never lost.

        Asking for the state the request is already in records the evidence and note without a new timestamp,
        so a re-run step is harmless."""
        if new_state not in STATES:
            raise ValueError(f"unknown state {new_state!r}; states are {', '.join(STATES)}")
        evidence = dict(evidence or {})
        try:
            _canonical(evidence)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"evidence must be JSON-serialisable ({exc}); fix: convert values to plain types") from exc
        with Session(self.engine) as s, s.begin():
            row = self._row(s, request_id, lock=True)
            if new_state != row.state:
                if new_state not in TRANSITIONS[row.state]:
                    allowed = ", ".join(TRANSITIONS[row.state]) or "none (final)"
                    raise ValueError(
                        f"request {request_id}: cannot go from '{row.state}' to '{new_state}'; allowed: {allowed}"
                    )
                row.state = new_state
                setattr(row, f"{new_state}_at", _now())
            row.evidence = {**(row.evidence or {}), **evidence}
            if note:
                row.notes = [*(row.notes or []), {"time": _now().isoformat(), "state": new_state, "note": note}]
            s.flush()
            return StoredRequest._from_row(row)

    def update_evidence(self, request_id: str, fn) -> StoredRequest:
        """Read-modify-write the evidence under the row lock, so two runs cannot both claim one request.

        `fn(state, evidence) -> evidence` may raise to refuse; nothing is written then."""
        with Session(self.engine) as s, s.begin():
            row = self._row(s, request_id, lock=True)
            new = fn(row.state, dict(row.evidence or {}))
            _canonical(new)
            row.evidence = new
            s.flush()
            return StoredRequest._from_row(row)

    def mark_processing_run(self, request_id: str, run_id: str) -> StoredRequest:
        if not run_id:
            raise ValueError("run_id is empty; pass the id of the run processing this request")
        with Session(self.engine) as s, s.begin():
            row = self._row(s, request_id, lock=True)
            if run_id not in (row.processing_runs or []):
                row.processing_runs = [*(row.processing_runs or []), run_id]
            s.flush()
            return StoredRequest._from_row(row)

    def deadline_report(self, request_id: str, now: dt.datetime | None = None) -> dict:
        """Was (or is) the deadline met? `met` is None while unverified and still in time."""
        req = self.get(request_id)
        now = _utc(now) or _now()
        received, verified = req.timestamps["received"], req.timestamps.get("verified")
        end = verified or now
        return {
            "request_id": req.request_id,
            "state": req.state,
            "urgent": req.urgent,
            "deadline": req.deadline.isoformat(),
            "received_at": received.isoformat(),
            "verified_at": verified.isoformat() if verified else None,
            "time_to_verified_s": (verified - received).total_seconds() if verified else None,
            "elapsed_s": (end - received).total_seconds(),
            "remaining_s": None if verified else (req.deadline - now).total_seconds(),
            "met": (verified <= req.deadline) if verified else (None if now <= req.deadline else False),
            "overdue": verified is None and now > req.deadline,
        }

    def purge_cleartext(self, request_id: str) -> StoredRequest:
        """Drop the cleartext of a verified request: its selector (the salted selector_hash remains for audit) and the
        forgotten facts' prompts and answers in its plan (their count and fact ids remain)."""
        with Session(self.engine) as s, s.begin():
            row = self._row(s, request_id, lock=True)
            if row.state != "verified":
                raise ValueError(
                    f"request {request_id} is '{row.state}'; its selector can be purged only after it is verified"
                )
            if row.purged_at is None:
                row.selector = None
                row.evidence = _without_cleartext(row.evidence or {})
                row.purged_at = _now()
            s.flush()
            return StoredRequest._from_row(row)

    # -- tombstones ------------------------------------------------------------------------
    def add_tombstones(
        self,
        request_id: str,
        row_ids: Iterable[str] = (),
        subject_ids: Iterable[str] = (),
        fact_ids: Iterable[str] = (),
        doc_ids: Iterable[str] = (),
    ) -> int:
        """Record ids that must never return (as salted hashes); adding an existing tombstone is a no-op. Returns how
        many are new."""
        wanted = {
            (kind, v)
            for kind, values in zip(TOMBSTONE_KINDS, (row_ids, subject_ids, fact_ids, doc_ids), strict=True)
            for v in ([values] if isinstance(values, str) else values)
        }
        bad = sorted({kind for kind, v in wanted if not isinstance(v, str) or not v})
        if bad:
            raise ValueError(f"empty or non-string ids in {', '.join(k + '_ids' for k in bad)}; fix: pass id strings")
        wanted = {(kind, tombstone_digest(self._db_salt, kind, v)) for kind, v in wanted}  # never the id itself
        with Session(self.engine) as s, s.begin():
            self._row(s, request_id)
            have = {
                (t.kind, t.value) for t in s.scalars(sa_select(_Tombstone).where(_Tombstone.request_id == request_id))
            }
            new = sorted(wanted - have)
            now = _now()
            s.add_all(_Tombstone(request_id=request_id, kind=k, value=v, created_at=now) for k, v in new)
        return len(new)

    def tombstones(self) -> Tombstones:
        """Every tombstone, as hashes; one recorded in clear by an older memgov is hashed as it is read."""
        sets: dict[str, set[str]] = {k: set() for k in TOMBSTONE_KINDS}
        requests: set[str] = set()
        with Session(self.engine) as s:
            for kind, value, rid in s.execute(sa_select(_Tombstone.kind, _Tombstone.value, _Tombstone.request_id)):
                hashed = value if value.startswith(TOMBSTONE_HASH) else tombstone_digest(self._db_salt, kind, value)
                sets[kind].add(hashed)
                requests.add(rid)
        return Tombstones(self._db_salt, *(frozenset(sets[k]) for k in TOMBSTONE_KINDS),
                          request_ids=frozenset(requests))
