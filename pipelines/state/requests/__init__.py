"""Forget requests and tombstones: validated intake, a state machine with evidence, insert-only tombstones."""

from .models import LEGAL_BASES, ForgetRequest, Selector
from .store import STATES, TRANSITIONS, RequestStore, StoredRequest, Tombstones

__all__ = [
    "LEGAL_BASES",
    "STATES",
    "TRANSITIONS",
    "ForgetRequest",
    "RequestStore",
    "Selector",
    "StoredRequest",
    "Tombstones",
]
