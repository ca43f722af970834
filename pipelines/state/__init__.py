"""Durable state (may import: core, model): artifact stores, the change log, the request store, the inbox, row tables."""
