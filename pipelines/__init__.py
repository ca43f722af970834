"""Dagster-free engines of memgov, grouped by layer; a package imports only the layers listed below its own.

Bottom first: core → model → state → data → methods → trust → deployment → forget → governance → cycle
(tests/unit/test_layering.py holds the same order and fails on any import that points up).
"""
