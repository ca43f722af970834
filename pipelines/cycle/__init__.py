"""The governed update cycle as plain functions: each Dagster asset calls exactly one of these."""
