"""Identity and proof: Ed25519 keys, the deployment's keyring, signed decisions and signed release attestations."""
