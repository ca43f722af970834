"""The `memgov` command: the user-facing entry point that composes the engines (pipelines/) and the Dagster wiring (assets/)."""
