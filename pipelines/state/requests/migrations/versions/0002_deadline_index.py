"""Deadline and receipt indexes: the deadline watch and `memgov forget status` read open requests by time,
which stays fast with tens of thousands of requests on file.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    op.create_index("ix_forget_requests_deadline", "forget_requests", ["deadline"])
    op.create_index("ix_forget_requests_received_at", "forget_requests", ["received_at"])
