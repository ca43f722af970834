"""Dagster-free engines of memgov: each subpackage has a small public API and is tested on its own."""
