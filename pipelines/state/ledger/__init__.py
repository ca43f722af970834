"""Change log: append-only, hash-chained JSON lines with verification and an optional write-once mirror."""

from .changelog import GENESIS, ChangeLog, VerifyResult, event_hash, redact
from .witness import LogTampered, Witness

__all__ = ["GENESIS", "ChangeLog", "LogTampered", "VerifyResult", "Witness", "event_hash", "redact"]
