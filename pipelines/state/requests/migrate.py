"""Bring a request store's schema to the current revision with Alembic, on every open.

The current revision is read with one query first, so an up-to-date store costs nothing more. Migrating runs in
one transaction that also serialises concurrent openers (SQLite: the write lock taken by BEGIN IMMEDIATE;
Postgres: an advisory lock), so two processes opening a new store never both create it. A store made before
migrations existed (tables, no `alembic_version`) has its missing nullable columns added and is stamped 0001.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

HEAD = "0002"
MIGRATIONS = Path(__file__).with_name("migrations")
_PG_LOCK = 0x6D656D67  # "memg": one advisory lock id for memgov's schema changes


def current_revision(conn: Connection) -> str | None:
    if not inspect(conn).has_table("alembic_version"):
        return None
    return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()


def _config(conn: Connection):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = conn
    return cfg


def migrate(engine: Engine, legacy_fix=None) -> str:
    """Upgrade to HEAD (a no-op when already there); returns the revision the store was at before."""
    with engine.connect() as probe:
        before = current_revision(probe)
    if before == HEAD:
        return before
    from alembic import command

    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})
        before = current_revision(conn)  # another opener may have migrated while we waited
        if before == HEAD:
            return before
        cfg = _config(conn)
        if before is None and inspect(conn).has_table("forget_requests"):
            if legacy_fix is not None:
                legacy_fix(conn)
            command.stamp(cfg, "0001")
        command.upgrade(cfg, "head")
    return before or "none"
