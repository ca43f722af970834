"""Forget requests and tombstones: validated intake, a state machine with evidence, insert-only tombstones."""

from .client import submit_forget_request
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
    "submit_forget_request",
]
