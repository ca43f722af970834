"""Alembic migrations of the request store (pipelines.state.requests.migrate applies them on open)."""
