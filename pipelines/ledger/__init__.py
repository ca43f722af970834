"""Change log: append-only, hash-chained JSON lines with verification and an optional write-once mirror."""

from .changelog import GENESIS, ChangeLog, VerifyResult, event_hash, redact

__all__ = ["GENESIS", "ChangeLog", "VerifyResult", "event_hash", "redact"]
