"""The request store as first released: requests, insert-only tombstones, the store's own secrets.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None

_PG_GUARD = """
CREATE OR REPLACE FUNCTION memgov_tombstones_are_permanent() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'tombstones are permanent: they can only be added'; END; $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS tombstones_permanent ON tombstones;
CREATE TRIGGER tombstones_permanent BEFORE UPDATE OR DELETE ON tombstones
FOR EACH ROW EXECUTE FUNCTION memgov_tombstones_are_permanent();
"""


def _when(name: str) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=True)


def upgrade() -> None:
    op.create_table(
        "forget_requests",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("requester", sa.String(256), nullable=False),
        sa.Column("selector", sa.JSON, nullable=True),
        sa.Column("selector_hash", sa.String(80), nullable=False),
        sa.Column("content_hash", sa.String(80), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("legal_basis", sa.String(32), nullable=False),
        sa.Column("deadline", sa.DateTime(timezone=True), nullable=False),
        sa.Column("urgent", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        *(_when(f"{s}_at") for s in ("held", "planned", "applied", "verified", "failed", "purged")),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.Column("notes", sa.JSON, nullable=False),
        sa.Column("processing_runs", sa.JSON, nullable=False),
    )
    op.create_index("ix_forget_requests_state", "forget_requests", ["state"])
    op.create_table(
        "tombstones",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(64), sa.ForeignKey("forget_requests.request_id"), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("value", sa.String(512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("kind", "value", "request_id"),
    )
    op.create_index("ix_tombstones_request_id", "tombstones", ["request_id"])
    op.create_table(
        "memgov_meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    guard_tombstones()


def guard_tombstones() -> None:
    """No UPDATE or DELETE on tombstones, whoever holds the database credentials (short of dropping the guard)."""
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for action in ("DELETE", "UPDATE"):
            op.execute(f"CREATE TRIGGER IF NOT EXISTS tombstones_no_{action.lower()} BEFORE {action} ON tombstones "
                       "BEGIN SELECT RAISE(ABORT, 'tombstones are permanent: they can only be added'); END")
    elif bind.dialect.name == "postgresql":
        op.execute(_PG_GUARD)
