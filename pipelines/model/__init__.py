"""Causal-LM helpers (may import: core): encoding, scoring, checkpoints, architectures, training items, recipes."""
