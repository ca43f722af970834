"""Foundations (imports nothing of memgov): file locks, failpoints, secrets, digests, ids, memory, the plugin registry."""
