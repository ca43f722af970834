"""Dagster wiring only: assets call one engine function each; logic lives in pipelines/ and evals/."""
