"""Alembic migrations of the request store (pipelines.requests.migrate applies them on open)."""
