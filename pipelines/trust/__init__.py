"""Identity and proof (may import: core … methods): Ed25519 keys, the keyring, signed decisions and attestations."""
